//! Op-level speed comparison of the fast ops vs candle's own ops at VGG19 (96x96 input) layer
//! shapes. Run by hand:
//!
//! ```text
//! cargo run --release -p pyramid-ops --example opbench -- [--batch 32] [--reps 3] [--no-candle]
//!     [--tile BYTES --min-cols N] [--wino-block FLOATS] [--input 96|32] [--cpu]
//!     [--only SUBSTRING]
//! ```
//!
//! The convolution algorithm follows `PYRAMID_CONV_ALGO` (`auto`, `im2col`, `winograd`); the
//! other flags set the tiling of [`pyramid_ops::ConvOptions`] (defaults: the built-in values).
//!
//! `fwd` = conv + bias + ReLU forward; `bwd` = `y.backward()` (input, weight and bias
//! gradients, including candle's gradient-accumulation overhead). GFLOP/s counts 2*MACs for
//! the forward and 4*MACs for the backward.
use candle_core::{Device, Tensor, Var};
use pyramid_ops::{Backend, ConvOptions};
use std::time::Instant;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Process CPU time in seconds (all threads).
fn cpu_time() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Best wall time in ms, or with `--cpu` the best process CPU time divided by the number of
/// rayon threads (a load-independent estimate on a shared machine).
fn best_of<F: FnMut() -> candle_core::Result<()>>(reps: usize, mut f: F) -> f64 {
    let use_cpu = std::env::args().any(|a| a == "--cpu");
    let nt = rayon::current_num_threads() as f64;
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        let c = cpu_time();
        f().unwrap();
        let v = if use_cpu {
            (cpu_time() - c) / nt
        } else {
            t.elapsed().as_secs_f64()
        };
        best = best.min(v);
    }
    best * 1e3
}

fn main() -> candle_core::Result<()> {
    let batch: usize = arg("--batch", 32);
    let reps: usize = arg("--reps", 3);
    let no_candle = std::env::args().any(|a| a == "--no-candle");
    let mut opts = ConvOptions::default();
    let wino_block: usize = arg("--wino-block", 0);
    if wino_block > 0 {
        opts.winograd_block_floats = wino_block;
        opts.winograd_grad_w_block_floats = wino_block;
    }
    let tile: usize = arg("--tile", 0);
    if tile > 0 {
        opts.im2col_tile_bytes = tile;
        opts.im2col_min_cols = arg("--min-cols", 256);
    }
    let dev = Device::Cpu;
    println!(
        "batch {batch}, {} rayon threads, best of {reps}",
        rayon::current_num_threads()
    );
    println!(
        "{:<22} {:>7} | {:>9} {:>7} | {:>9} {:>7} || {:>9} {:>9} | {:>6} {:>6}",
        "layer",
        "GFLOP",
        "fast fwd",
        "GF/s",
        "fast bwd",
        "GF/s",
        "cdl fwd",
        "cdl bwd",
        "x fwd",
        "x bwd"
    );
    let shapes = [
        ("conv1_1 96x96 3->64", 96, 3, 64),
        ("conv1_2 96x96 64->64", 96, 64, 64),
        ("conv2_1 48x48 64->128", 48, 64, 128),
        ("conv2_2 48x48 128->128", 48, 128, 128),
        ("conv3_x 24x24 256->256", 24, 256, 256),
        ("conv4_x 12x12 512->512", 12, 512, 512),
        ("conv5_x 6x6 512->512", 6, 512, 512),
    ];
    let only: String = arg("--only", String::new());
    let mut tot = [0f64; 4];
    // `--input 32`: the same layers for a 32×32 input (names keep the 96×96 sizes).
    let input: usize = arg("--input", 96);
    for (name, hw, cin, cout) in shapes {
        let hw = (hw * input / 96).max(1);
        if !name.contains(only.as_str()) {
            continue;
        }
        // conv1_1's input is the image: no input gradient, as in training.
        let xt = Tensor::randn(0f32, 1., (batch, cin, hw, hw), &dev)?;
        let x = if cin == 3 {
            Var::from_tensor(&xt)?.as_tensor().detach()
        } else {
            Var::from_tensor(&xt)?.as_tensor().clone()
        };
        let x = &x;
        let w = Var::from_tensor(
            &(Tensor::randn(0f32, 1., (cout, cin, 3, 3), &dev)?
                * (2.0 / (9.0 * cin as f64)).sqrt())?,
        )?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.1, cout, &dev)?)?;
        let macs = (batch * hw * hw * cout * cin * 9) as f64;
        let gflop = 2.0 * macs / 1e9;
        let mut res = vec![];
        for backend in [Backend::Fast, Backend::Candle] {
            if backend == Backend::Candle && no_candle {
                res.push((f64::NAN, f64::NAN));
                continue;
            }
            let reps = if backend == Backend::Candle { 1 } else { reps };
            let f = || {
                let (w, b) = (w.as_tensor(), Some(b.as_tensor()));
                pyramid_ops::conv2d_relu_with(x, w, b, 1, 1, backend, &opts)
            };
            f()?.backward()?; // warm-up
            let tf = best_of(reps, || f().map(|_| ()));
            let y = f()?;
            let tb = best_of(reps, || y.backward().map(|_| ()));
            res.push((tf, tb));
        }
        let (ff, fb) = res[0];
        let (cf, cb) = res[1];
        tot[0] += ff;
        tot[1] += fb;
        tot[2] += cf;
        tot[3] += cb;
        println!(
            "{name:<22} {gflop:>7.1} | {ff:>7.1}ms {:>7.1} | {fb:>7.1}ms {:>7.1} || {cf:>7.1}ms {cb:>7.1}ms | {:>6.2} {:>6.2}",
            gflop / ff * 1e3,
            2.0 * gflop / fb * 1e3,
            cf / ff,
            cb / fb
        );
    }
    println!(
        "{:<22} {:>7} | {:>7.1}ms {:>7} | {:>7.1}ms {:>7} || {:>7.1}ms {:>7.1}ms",
        "sum (one of each)", "", tot[0], "", tot[1], "", tot[2], tot[3]
    );
    // VGG19 conv time per training step (16 convs: 1x conv1_1, 1x conv1_2, 1x conv2_1, 1x conv2_2,
    // 4x conv3 (one is 128->256), 4x conv4 (one is 256->512), 4x conv5) is estimated in the
    // report from the per-layer numbers above.

    for (name, hw, c) in [
        ("pool 96x96x64", 96, 64),
        ("pool 48x48x128", 48, 128),
        ("pool 24x24x256", 24, 256),
    ] {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (batch, c, hw, hw), &dev)?)?;
        let mut r = vec![];
        for backend in [Backend::Fast, Backend::Candle] {
            if backend == Backend::Candle && no_candle {
                r.push((f64::NAN, f64::NAN));
                continue;
            }
            let f = || pyramid_ops::max_pool2x2(x.as_tensor(), backend);
            f()?.backward()?;
            let tf = best_of(reps, || f().map(|_| ()));
            let y = f()?;
            let tb = best_of(reps, || y.backward().map(|_| ()));
            r.push((tf, tb));
        }
        println!(
            "{name:<22} fast fwd {:>6.1}ms bwd {:>6.1}ms | candle fwd {:>6.1}ms bwd {:>6.1}ms",
            r[0].0, r[0].1, r[1].0, r[1].1
        );
    }
    Ok(())
}
