//! Winograd F(2×2, 3×3) against candle's conv: forward and all three gradients, within 1e-4
//! relative error. A separate test binary, since the algorithm choice is process-global: every
//! 3×3 stride-1 case here takes Winograd whatever its channel counts.
mod common;
use common::*;
use proptest::prelude::*;
use pyramid_ops::{set_conv_algo, set_portable_kernels, set_winograd_block, ConvAlgo};
use std::sync::Mutex;

/// The algorithm is process-global and tests run on parallel threads: one test at a time.
static ALGO_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ALGO_LOCK.lock().unwrap_or_else(|e| e.into_inner())
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
        let _guard = lock();
        set_conv_algo(ConvAlgo::Winograd);
        set_winograd_block(block);
        set_portable_kernels(portable);
        check_conv(&c).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn vgg_like_layers() {
    let _guard = lock();
    set_conv_algo(ConvAlgo::Winograd);
    // The AVX-512 transforms (where the CPU has them) and the portable ones.
    for (block, portable) in [
        (1 << 23, false),
        (4096, false),
        (1 << 23, true),
        (4096, true),
    ] {
        set_winograd_block(block);
        set_portable_kernels(portable);
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
            check_conv(&case).unwrap();
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
    let _guard = lock();
    set_portable_kernels(false);
    set_conv_algo(ConvAlgo::Im2col);
    let a = run_conv(&case, pyramid_ops::Backend::Fast);
    set_conv_algo(ConvAlgo::Winograd);
    let b = run_conv(&case, pyramid_ops::Backend::Fast);
    let d = |x: &candle_core::Tensor, y: &candle_core::Tensor| rel_err(x, y);
    assert!(d(&a.y, &b.y) < 1e-5 && d(&a.gx, &b.gx) < 1e-5 && d(&a.gw, &b.gw) < 1e-5);
    // The two paths round differently, so identical results would mean one path ran twice.
    assert_ne!(
        a.gw.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.gw.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}
