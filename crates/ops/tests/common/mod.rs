#![allow(dead_code)]
use candle_core::{DType, Device, Tensor, Var};
use pyramid_ops::{Backend, ConvOptions};

/// Deterministic pseudo-random values in [-1, 1) (splitmix64).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(rand_vec(n, seed), shape, &Device::Cpu).unwrap()
}

/// max |a - b| / max(max |b|, 1): relative to the reference's magnitude, but absolute where
/// that magnitude is below 1. Every value compared in `check_conv` is a sum of products of
/// inputs in [-1, 1]; a sum that cancels to near zero (a one-channel weight gradient, the bias
/// gradient of a single output channel) keeps the rounding error of its large terms, so a
/// purely relative error would fail on correct kernels.
pub fn sum_err(a: &Tensor, b: &Tensor) -> f32 {
    let (diff, scale) = diff_and_scale(a, b);
    diff / scale.max(1.0)
}

/// `(max |a - b|, max |b|)`.
fn diff_and_scale(a: &Tensor, b: &Tensor) -> (f32, f32) {
    assert_eq!(a.dims(), b.dims());
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    (diff, scale)
}

/// max |a - b| / max |b| (0 when both are zero).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let (diff, scale) = diff_and_scale(a, b);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
    pub bias: bool,
    pub relu: bool,
    pub seed: u64,
}

pub struct Out {
    pub y: Tensor,
    pub gx: Tensor,
    pub gw: Tensor,
    pub gb: Option<Tensor>,
}

/// The case through `backend` with the default options.
pub fn run_conv(c: &Case, backend: Backend) -> Out {
    run_conv_with(c, backend, &ConvOptions::default())
}

pub fn run_conv_with(c: &Case, backend: Backend, opts: &ConvOptions) -> Out {
    run_conv_masked(c, backend, opts, None)
}

/// Like [`run_conv`]; with `relu_mask`, the op is `conv2d` (no ReLU) and the loss is
/// `sum(y * r * mask)`, so the gradients are the ReLU-masked ones for that exact mask, and the
/// returned `y` is `relu(conv)`.
pub fn run_conv_masked(
    c: &Case,
    backend: Backend,
    opts: &ConvOptions,
    relu_mask: Option<&Tensor>,
) -> Out {
    let x = Var::from_tensor(&rand_tensor(&[c.b, c.c, c.h, c.w], c.seed)).unwrap();
    let w = Var::from_tensor(&rand_tensor(&[c.o, c.c, c.k, c.k], c.seed ^ 1)).unwrap();
    let b = Var::from_tensor(&rand_tensor(&[c.o], c.seed ^ 2)).unwrap();
    let bias = c.bias.then_some(b.as_tensor());
    let f = if c.relu && relu_mask.is_none() {
        pyramid_ops::conv2d_relu_with
    } else {
        pyramid_ops::conv2d_with
    };
    let y = f(x.as_tensor(), w.as_tensor(), bias, c.s, c.p, backend, opts).unwrap();
    // loss = sum(y * r) with a random r, so the output gradient is r.
    let mut r = rand_tensor(y.dims(), c.seed ^ 3);
    if let Some(m) = relu_mask {
        r = (r * m).unwrap();
    }
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    Out {
        gx: grads.get(x.as_tensor()).unwrap().clone(),
        gw: grads.get(w.as_tensor()).unwrap().clone(),
        gb: c.bias.then(|| grads.get(b.as_tensor()).unwrap().clone()),
        y: if relu_mask.is_some() {
            y.relu().unwrap()
        } else {
            y
        },
    }
}

/// Fast (default options) against candle, see [`check_conv_with`].
pub fn check_conv(c: &Case) -> Result<(), String> {
    check_conv_with(c, &ConvOptions::default())
}

/// Fast with `opts` against candle. With a fused ReLU, the reference gradients use the fast
/// output's own mask `y > 0`: a pre-activation within rounding of zero may land on either side
/// in the two implementations, and the ReLU's gradient jumps there.
pub fn check_conv_with(c: &Case, opts: &ConvOptions) -> Result<(), String> {
    let fast = run_conv_with(c, Backend::Fast, opts);
    let mask = c
        .relu
        .then(|| fast.y.gt(0f32).unwrap().to_dtype(DType::F32).unwrap());
    let reference = run_conv_masked(c, Backend::Candle, opts, mask.as_ref());
    assert_eq!(fast.y.dtype(), DType::F32);
    let mut errs = vec![
        ("y", sum_err(&fast.y, &reference.y)),
        ("gx", sum_err(&fast.gx, &reference.gx)),
        ("gw", sum_err(&fast.gw, &reference.gw)),
    ];
    if let (Some(a), Some(b)) = (&fast.gb, &reference.gb) {
        errs.push(("gb", sum_err(a, b)));
    }
    for (name, e) in errs {
        if e.is_nan() || e > 1e-4 {
            return Err(format!("{c:?}: {name} relative error {e}"));
        }
    }
    Ok(())
}

pub fn case_strategy() -> impl proptest::strategy::Strategy<Value = Case> {
    use proptest::prelude::*;
    (
        1usize..=8,
        prop::sample::select(vec![1usize, 3, 4, 8, 16]),
        prop::sample::select(vec![1usize, 3, 5, 7, 9, 11, 13, 4, 8]),
        prop::sample::select(vec![1usize, 3, 5, 7, 9, 11, 13, 6]),
        prop::sample::select(vec![1usize, 5, 8, 16]),
        prop::sample::select(vec![1usize, 3]),
        1usize..=2,
        0usize..=1,
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_filter_map("kernel larger than padded input", |t| {
            let (b, c, h, w, o, k, s, p, bias, relu, seed) = t;
            (h + 2 * p >= k && w + 2 * p >= k).then_some(Case {
                b,
                c,
                h,
                w,
                o,
                k,
                s,
                p,
                bias,
                relu,
                seed,
            })
        })
}

/// PyTorch-semantics reference max-pool backward: the gradient of each window goes to its first
/// maximum in scan order.
pub fn ref_pool_grad(x: &[f32], gy: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let mut gx = vec![0f32; planes * h * w];
    for p in 0..planes {
        for oh in 0..ho {
            for ow in 0..wo {
                let mut best = None::<(usize, f32)>;
                for dh in 0..2 {
                    for dw in 0..2 {
                        let i = p * h * w + (2 * oh + dh) * w + 2 * ow + dw;
                        if best.is_none_or(|(_, m)| x[i] > m) {
                            best = Some((i, x[i]));
                        }
                    }
                }
                gx[best.unwrap().0] += gy[p * ho * wo + oh * wo + ow];
            }
        }
    }
    gx
}
