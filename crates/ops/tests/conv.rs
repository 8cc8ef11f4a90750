//! The fast conv against candle's: forward and all three gradients within 1e-4 relative error.
//! With the default options; with tiny im2col chunks, so that the row-chunked and grouped code
//! paths run on small shapes; and with Winograd forced on every 3×3 stride-1 case (AVX-512,
//! where the CPU has it, and portable transforms, several block sizes). The options travel with
//! each call, so all of them run side by side in one test binary.
mod common;
use common::*;
use proptest::prelude::*;
use pyramid_ops::{Backend, ConvAlgo, ConvOptions, Isa};

/// Winograd for every 3×3 stride-1 layer, whatever its channel counts.
fn winograd(block_floats: usize, isa: Isa) -> ConvOptions {
    ConvOptions {
        algo: ConvAlgo::Winograd,
        isa,
        winograd_block_floats: block_floats,
        winograd_grad_w_block_floats: block_floats,
        ..ConvOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn conv_matches_candle(c in case_strategy()) {
        check_conv(&c).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn conv_matches_candle_small_tiles(c in case_strategy(), tile in 1usize..4096, min_cols in 1usize..64) {
        let opts = ConvOptions { im2col_tile_bytes: tile, im2col_min_cols: min_cols, ..ConvOptions::default() };
        check_conv_with(&c, &opts).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn vgg_like_layer() {
    for (k, s, p, relu) in [
        (3, 1, 1, true),
        (3, 1, 1, false),
        (1, 1, 0, true),
        (3, 2, 1, false),
    ] {
        let c = Case {
            b: 3,
            c: 32,
            h: 20,
            w: 20,
            o: 48,
            k,
            s,
            p,
            bias: true,
            relu,
            seed: 7,
        };
        check_conv(&c).unwrap();
    }
}

#[test]
fn non_contiguous_inputs() {
    use candle_core::Var;
    // x is a transposed view, w a narrowed view.
    let xt = Var::from_tensor(&rand_tensor(&[2, 3, 7, 9], 11)).unwrap();
    let wb = Var::from_tensor(&rand_tensor(&[6, 3, 3, 3], 12)).unwrap();
    let b = Var::from_tensor(&rand_tensor(&[4], 13)).unwrap();
    let mut res = vec![];
    for backend in [Backend::Fast, Backend::Candle] {
        let x = xt.as_tensor().transpose(2, 3).unwrap();
        let w = wb.as_tensor().narrow(0, 1, 4).unwrap();
        let y = pyramid_ops::conv2d_relu(&x, &w, Some(b.as_tensor()), 1, 1, backend).unwrap();
        let r = rand_tensor(y.dims(), 14);
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        res.push((
            y,
            g.get(xt.as_tensor()).unwrap().clone(),
            g.get(wb.as_tensor()).unwrap().clone(),
            g.get(b.as_tensor()).unwrap().clone(),
        ));
    }
    assert!(rel_err(&res[0].0, &res[1].0) < 1e-4);
    assert!(rel_err(&res[0].1, &res[1].1) < 1e-4);
    assert!(rel_err(&res[0].2, &res[1].2) < 1e-4);
    assert!(rel_err(&res[0].3, &res[1].3) < 1e-4);
}

#[test]
fn frozen_weights_only_input_grad() {
    use candle_core::Var;
    // w and b are plain tensors (not tracked): only the input gradient is needed.
    let x = Var::from_tensor(&rand_tensor(&[2, 4, 6, 6], 21)).unwrap();
    let w = rand_tensor(&[5, 4, 3, 3], 22);
    let b = rand_tensor(&[5], 23);
    let gx: Vec<_> = [Backend::Fast, Backend::Candle]
        .into_iter()
        .map(|be| {
            let y = pyramid_ops::conv2d_relu(x.as_tensor(), &w, Some(&b), 1, 1, be).unwrap();
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            if be == Backend::Fast {
                assert!(g.get(&w).is_none());
            }
            g.get(x.as_tensor()).unwrap().clone()
        })
        .collect();
    assert!(rel_err(&gx[0], &gx[1]) < 1e-4);
}

#[test]
fn fallback_for_other_dtypes() {
    use candle_core::DType;
    let x = rand_tensor(&[1, 2, 5, 5], 31).to_dtype(DType::F64).unwrap();
    let w = rand_tensor(&[3, 2, 3, 3], 32).to_dtype(DType::F64).unwrap();
    let y = pyramid_ops::conv2d(&x, &w, None, 1, 1, Backend::Fast).unwrap();
    let r = x.conv2d(&w, 1, 1, 1, 1).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    let d = (y - r)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(d < 1e-12);
}

fn winograd_case() -> impl Strategy<Value = Case> {
    (case_strategy(), 0usize..=2).prop_map(|(mut c, p)| {
        c.k = 3;
        c.s = 1;
        c.p = p;
        // The padded input must hold the kernel.
        c.h = c.h.max(3 - 2 * p.min(1));
        c.w = c.w.max(3 - 2 * p.min(1));
        c
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn winograd_matches_candle(
        c in winograd_case(),
        block in prop::sample::select(vec![1usize, 7, 64, 1 << 16]),
        portable in any::<bool>(),
    ) {
        let isa = if portable { Isa::Portable } else { Isa::Detect };
        check_conv_with(&c, &winograd(block, isa)).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn winograd_vgg_like_layers() {
    // The AVX-512 transforms (where the CPU has them) and the portable ones.
    for (block, isa) in [
        (1 << 23, Isa::Detect),
        (4096, Isa::Detect),
        (1 << 23, Isa::Portable),
        (4096, Isa::Portable),
    ] {
        for (c, o, h, w, p, relu) in [
            (64, 64, 24, 24, 1, true),
            (32, 48, 13, 11, 1, false),
            (16, 24, 7, 9, 0, true),
            (24, 16, 6, 6, 2, true),
            // Rows of 16 tiles and more take the row-chunked transforms; odd sizes end a row
            // with a half tile.
            (16, 16, 33, 35, 1, true),
            (8, 24, 34, 47, 0, false),
            (16, 8, 20, 64, 2, true),
            (4, 4, 5, 97, 1, false),
            // Beyond 128×256 channels the weight gradient is summed in place.
            (256, 256, 6, 6, 1, true),
        ] {
            let case = Case {
                b: 3,
                c,
                h,
                w,
                o,
                k: 3,
                s: 1,
                p,
                bias: true,
                relu,
                seed: 11,
            };
            check_conv_with(&case, &winograd(block, isa)).unwrap();
        }
    }
}

/// Winograd and im2col agree with each other (and the choice is a real switch).
#[test]
fn algorithms_agree() {
    let case = Case {
        b: 2,
        c: 32,
        h: 10,
        w: 10,
        o: 32,
        k: 3,
        s: 1,
        p: 1,
        bias: true,
        relu: true,
        seed: 5,
    };
    let with = |algo| ConvOptions {
        algo,
        ..ConvOptions::default()
    };
    let a = run_conv_with(&case, Backend::Fast, &with(ConvAlgo::Im2col));
    let b = run_conv_with(&case, Backend::Fast, &with(ConvAlgo::Winograd));
    let d = |x: &candle_core::Tensor, y: &candle_core::Tensor| rel_err(x, y);
    assert!(d(&a.y, &b.y) < 1e-5 && d(&a.gx, &b.gx) < 1e-5 && d(&a.gw, &b.gw) < 1e-5);
    // The two paths round differently, so identical results would mean one path ran twice.
    assert_ne!(
        a.gw.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.gw.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

/// The AVX-512 and portable Winograd transforms do the same arithmetic in the same order: the
/// same bits, forward and backward (on a CPU without AVX-512 both run the portable code).
/// Narrow and wide tile rows, odd sizes, both weight-gradient summations.
#[test]
fn winograd_isas_agree_bitwise() {
    let bits = |t: &candle_core::Tensor| -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    };
    for (i, (b, c, o, h, w, p)) in [
        (3, 16, 24, 7, 9, 0),
        (2, 16, 16, 33, 35, 1),
        (2, 8, 24, 34, 47, 2),
        (2, 256, 256, 6, 6, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let case = Case {
            b,
            c,
            h,
            w,
            o,
            k: 3,
            s: 1,
            p,
            bias: true,
            relu: i % 2 == 0,
            seed: 40 + i as u64,
        };
        let [a, z] = [Isa::Detect, Isa::Portable]
            .map(|isa| run_conv_with(&case, Backend::Fast, &winograd(1 << 16, isa)));
        for (name, x, y) in [
            ("y", &a.y, &z.y),
            ("gx", &a.gx, &z.gx),
            ("gw", &a.gw, &z.gw),
        ] {
            assert!(bits(x) == bits(y), "{case:?}: {name} differs between ISAs");
        }
    }
}

/// With few channels the default options run the direct kernel of `direct.rs` (forward and
/// input gradient, from 8 × 8 maps) and the dot-product weight gradient of `dots.rs`: their
/// AVX-512 and portable versions add in the same order with fused multiply-adds, so they give
/// the same bits, and they match candle. Widths and pixel counts that leave partial tiles,
/// partial vectors and vectors spanning rows; 1 to 32 channels.
#[test]
fn small_channel_kernels_isas_agree_bitwise() {
    let bits = |t: &candle_core::Tensor| -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    };
    for (i, (b, c, o, h, w)) in [
        (3, 1, 8, 32, 32),
        (2, 8, 8, 13, 11),
        (5, 4, 3, 7, 5),
        (2, 16, 16, 16, 16),
        (1, 3, 5, 600, 2),
        (2, 8, 19, 9, 8),
        (3, 16, 12, 8, 20),
        (2, 24, 32, 9, 10),
        (1, 32, 16, 8, 8),
        // 2 × 2 maps: one dense gemm per pass (dense.rs).
        (5, 64, 48, 2, 2),
        (2, 3, 7, 2, 2),
    ]
    .into_iter()
    .enumerate()
    {
        let case = Case {
            b,
            c,
            h,
            w,
            o,
            k: 3,
            s: 1,
            p: 1,
            bias: true,
            relu: i % 2 == 0,
            seed: 70 + i as u64,
        };
        let [a, z] = [Isa::Detect, Isa::Portable].map(|isa| {
            let opts = ConvOptions {
                isa,
                ..ConvOptions::default()
            };
            run_conv_with(&case, Backend::Fast, &opts)
        });
        for (name, x, y) in [
            ("y", &a.y, &z.y),
            ("gx", &a.gx, &z.gx),
            ("gw", &a.gw, &z.gw),
        ] {
            assert!(bits(x) == bits(y), "{case:?}: {name} differs between ISAs");
        }
        for isa in [Isa::Detect, Isa::Portable] {
            let opts = ConvOptions {
                isa,
                ..ConvOptions::default()
            };
            check_conv_with(&case, &opts).unwrap();
        }
    }
}

/// `slices::conv3x3_backward` with an input-gradient mask gives the unmasked input gradient
/// zeroed where the mask is not positive, bit for bit, whether the mask is applied as the
/// direct kernel writes (≤ 32 channels) or in a pass after Winograd / im2col; the weight and
/// bias gradients do not change.
#[test]
fn input_gradient_mask_is_applied_exactly() {
    use pyramid_ops::slices::{conv3x3_backward, Conv3x3};
    for (algo, (b, c, o, h)) in [
        (ConvAlgo::Auto, (3, 8, 16, 10)),
        (ConvAlgo::Auto, (2, 48, 40, 6)),
        (ConvAlgo::Im2col, (2, 8, 8, 9)),
        (ConvAlgo::Winograd, (2, 16, 16, 8)),
        (ConvAlgo::Auto, (4, 64, 64, 2)),
    ] {
        let s = Conv3x3 { b, c, o, h, w: h };
        let opts = ConvOptions {
            algo,
            ..ConvOptions::default()
        };
        let x = rand_vec(b * c * h * h, 1);
        let w = rand_vec(o * c * 9, 2);
        let gy = rand_vec(b * o * h * h, 3);
        let plain = conv3x3_backward(s, &x, &w, &gy, None, None, true, &opts);
        let masked = conv3x3_backward(s, &x, &w, &gy, None, Some(&x), true, &opts);
        let expect: Vec<u32> = plain
            .x
            .as_ref()
            .unwrap()
            .iter()
            .zip(&x)
            .map(|(g, m)| if *m > 0.0 { *g } else { 0.0 }.to_bits())
            .collect();
        let got: Vec<u32> = masked.x.unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, expect, "{algo:?} {b}×{c}→{o} @{h}");
        assert_eq!(masked.w, plain.w);
        assert_eq!(masked.b, plain.b);
    }
}

/// `slices::conv3x3_relu_pool_forward` (an inference pass's conv + ReLU + 2 × 2 max-pool in
/// one go) gives the bits of `conv3x3_forward` with ReLU followed by `max_pool2x2_forward`,
/// whichever way it runs: pooled in the Winograd output transform (wide rows with contiguous
/// stores, narrow ones with scatters, several blocks), pooled from im2col row chunks, or as
/// the conv then the pool (direct, dense, grouped im2col); odd sizes drop the last row and
/// column as the pool does.
#[test]
fn conv_relu_pool_is_conv_then_pool() {
    use pyramid_ops::slices::Conv3x3;
    use pyramid_ops::slices::{conv3x3_forward, conv3x3_relu_pool_forward, max_pool2x2_forward};
    // (algo, block floats, (b, c, o, h, w)): what runs is in the comment.
    let cases = [
        (ConvAlgo::Auto, 1 << 22, (2, 3, 64, 96, 96)), // im2col chunks (SVGG5's first layer)
        (ConvAlgo::Auto, 1 << 22, (2, 3, 40, 33, 31)), // im2col chunks, odd sizes
        (ConvAlgo::Auto, 1 << 22, (3, 3, 40, 9, 9)),   // grouped im2col: conv, then pool
        (ConvAlgo::Auto, 1 << 22, (2, 8, 16, 10, 10)), // direct: conv, then pool
        (ConvAlgo::Auto, 1 << 22, (4, 64, 64, 2, 2)),  // dense: conv, then pool
        (ConvAlgo::Auto, 1 << 22, (2, 32, 48, 34, 34)), // Winograd, wide rows
        (ConvAlgo::Auto, 1 << 22, (2, 33, 40, 35, 37)), // Winograd, wide rows, odd sizes
        (ConvAlgo::Auto, 1 << 22, (3, 48, 40, 7, 7)),  // Winograd, narrow rows, odd
        (ConvAlgo::Winograd, 1 << 12, (3, 5, 7, 12, 9)), // Winograd, many blocks
        (ConvAlgo::Im2col, 1 << 22, (2, 16, 24, 20, 18)), // forced im2col chunks
    ];
    for (algo, block, (b, c, o, h, w)) in cases {
        let s = Conv3x3 { b, c, o, h, w };
        let x = rand_vec(b * c * h * w, 1);
        let wt = rand_vec(o * c * 9, 2);
        let bias = rand_vec(o, 3);
        for isa in [Isa::Detect, Isa::Portable] {
            let opts = ConvOptions {
                algo,
                isa,
                winograd_block_floats: block,
                ..ConvOptions::default()
            };
            let y = conv3x3_forward(s, &x, &wt, &bias, true, &opts);
            let expect: Vec<u32> = max_pool2x2_forward(&y, b * o, h, w, isa)
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let got: Vec<u32> = conv3x3_relu_pool_forward(s, &x, &wt, &bias, &opts)
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(got.len(), b * o * (h / 2) * (w / 2));
            assert!(
                got.iter().any(|v| *v != 0),
                "{algo:?} {b}×{c}→{o} @{h}×{w}: all zero"
            );
            assert_eq!(got, expect, "{algo:?} {isa:?} {b}×{c}→{o} @{h}×{w}");
        }
    }
}
