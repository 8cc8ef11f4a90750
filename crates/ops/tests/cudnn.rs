//! The cuDNN conv ops (the `cudnn` feature) against the CPU `Fast` ops: forward output and the
//! input, weight and bias gradients, over a few shapes (kernel 1 and 3, stride 1 and 2, padding
//! 0 and 1, odd sizes), with and without the fused ReLU; and the per-shape algorithm cache.
//! Needs a CUDA GPU: without one (`Device::new_cuda(0)` fails) it prints a skip message.
#![cfg(feature = "cudnn")]

use candle_core::{DType, Device, Tensor, Var};
use pyramid_ops::{conv2d, conv2d_relu, Backend, Result};

/// `max |a - b| / max(max |b|, 1e-6)`.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
    let a = a.to_device(&Device::Cpu)?.flatten_all()?;
    let b = b.to_device(&Device::Cpu)?.flatten_all()?;
    assert_eq!(a.dims(), b.dims());
    let diff = (&a - &b)?.abs()?.max(0)?.to_scalar::<f32>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f32>()?.max(1e-6);
    Ok(diff / scale)
}

struct Case {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

const CASES: &[Case] = &[
    Case {
        b: 2,
        c: 3,
        h: 9,
        w: 9,
        o: 5,
        k: 3,
        stride: 1,
        pad: 1,
    },
    Case {
        b: 3,
        c: 4,
        h: 7,
        w: 11,
        o: 6,
        k: 3,
        stride: 2,
        pad: 1,
    },
    Case {
        b: 1,
        c: 5,
        h: 13,
        w: 10,
        o: 4,
        k: 3,
        stride: 2,
        pad: 0,
    },
    Case {
        b: 2,
        c: 6,
        h: 5,
        w: 7,
        o: 3,
        k: 1,
        stride: 1,
        pad: 0,
    },
    Case {
        b: 2,
        c: 3,
        h: 9,
        w: 6,
        o: 8,
        k: 1,
        stride: 2,
        pad: 1,
    },
    Case {
        b: 4,
        c: 16,
        h: 15,
        w: 15,
        o: 32,
        k: 3,
        stride: 1,
        pad: 0,
    },
];

/// Output and the gradients of `sum(out * r)` w.r.t. x, w (and b) on `dev`.
#[allow(clippy::type_complexity)]
fn run(
    dev: &Device,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    r: &Tensor,
    case: &Case,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor, Option<Tensor>)> {
    let xv = Var::from_tensor(&x.to_device(dev)?)?;
    let wv = Var::from_tensor(&w.to_device(dev)?)?;
    let bv = b
        .map(|b| Var::from_tensor(&b.to_device(dev)?))
        .transpose()?;
    let f = if relu { conv2d_relu } else { conv2d };
    let y = f(
        xv.as_tensor(),
        wv.as_tensor(),
        bv.as_ref().map(|b| b.as_tensor()),
        case.stride,
        case.pad,
        Backend::Fast,
    )?;
    let loss = (&y * r.to_device(dev)?)?.sum_all()?;
    let grads = loss.backward()?;
    let gx = grads.get(xv.as_tensor()).expect("x grad").clone();
    let gw = grads.get(wv.as_tensor()).expect("w grad").clone();
    let gb = bv.map(|b| grads.get(b.as_tensor()).expect("b grad").clone());
    Ok((y, gx, gw, gb))
}

#[test]
fn cudnn_matches_cpu_fast() -> Result<()> {
    let gpu = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            let e = e.to_string();
            let e = e.lines().next().unwrap_or_default();
            eprintln!("SKIPPED cudnn_matches_cpu_fast: no CUDA device ({e})");
            return Ok(());
        }
    };
    // Full-f32 math, whatever PYRAMID_CUDNN_TF32 says.
    pyramid_ops::cudnn::set_allow_tf32(false);
    let cpu = Device::Cpu;
    const TOL: f32 = 1e-4;
    for (i, case) in CASES.iter().enumerate() {
        let x = Tensor::randn(0f32, 1.0, (case.b, case.c, case.h, case.w), &cpu)?;
        let w = Tensor::randn(0f32, 0.3, (case.o, case.c, case.k, case.k), &cpu)?;
        let b = Tensor::randn(0f32, 0.5, case.o, &cpu)?;
        let ho = (case.h + 2 * case.pad - case.k) / case.stride + 1;
        let wo = (case.w + 2 * case.pad - case.k) / case.stride + 1;
        let r = Tensor::randn(0f32, 1.0, (case.b, case.o, ho, wo), &cpu)?;
        for relu in [false, true] {
            for bias in [true, false] {
                let bb = bias.then_some(&b);
                let (y0, gx0, gw0, gb0) = run(&cpu, &x, &w, bb, &r, case, relu)?;
                let (y1, gx1, gw1, gb1) = run(&gpu, &x, &w, bb, &r, case, relu)?;
                assert!(y1.device().is_cuda());
                assert_eq!(y1.dtype(), DType::F32);
                let mut errs = vec![
                    ("y", rel_err(&y1, &y0)?),
                    ("dx", rel_err(&gx1, &gx0)?),
                    ("dw", rel_err(&gw1, &gw0)?),
                ];
                if let (Some(g1), Some(g0)) = (&gb1, &gb0) {
                    errs.push(("db", rel_err(g1, g0)?));
                }
                eprintln!("case {i} relu={relu} bias={bias}: {errs:?}");
                for (what, e) in errs {
                    assert!(
                        e < TOL,
                        "case {i} relu={relu} bias={bias}: {what} relative error {e} >= {TOL}"
                    );
                }
            }
        }
    }

    // The algorithm cache: the second call with a given shape asks cuDNN for nothing.
    let case = Case {
        b: 2,
        c: 7,
        h: 17,
        w: 19,
        o: 9,
        k: 3,
        stride: 1,
        pad: 1,
    };
    let x = Tensor::randn(0f32, 1.0, (case.b, case.c, case.h, case.w), &cpu)?;
    let w = Tensor::randn(0f32, 0.3, (case.o, case.c, case.k, case.k), &cpu)?;
    let r = Tensor::randn(0f32, 1.0, (case.b, case.o, case.h, case.w), &cpu)?;
    run(&gpu, &x, &w, None, &r, &case, true)?;
    let first = pyramid_ops::cudnn::algo_cache_stats();
    run(&gpu, &x, &w, None, &r, &case, true)?;
    let second = pyramid_ops::cudnn::algo_cache_stats();
    eprintln!("algorithm cache after the first call {first:?}, after the second {second:?}");
    assert_eq!(second.misses, first.misses, "second call missed the cache");
    assert_eq!(second.entries, first.entries);
    assert!(
        second.hits >= first.hits + 3,
        "expected forward, backward-data and backward-filter cache hits"
    );
    Ok(())
}
