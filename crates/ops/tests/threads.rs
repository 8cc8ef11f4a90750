//! Every op gives bit-identical results (forward and all gradients) whatever the rayon thread
//! count: the ops run inside pools of 1, 2, 3, 5 and 8 threads and their outputs are compared
//! with `to_bits`. Also checks the two matrix products underneath: the `gemm` crate with
//! `Parallelism::Rayon(k)` against `Parallelism::None`, and candle's own CPU matmul (which
//! takes its thread count from `RAYON_NUM_THREADS`, so it runs in child processes).
//!
//! The ops run with their default options: with `ConvAlgo::Auto`, the 3×3 stride-1 cases with at
//! least 32 input and output channels take Winograd, the others im2col (unless
//! `PYRAMID_CONV_ALGO` says otherwise, which changes the paths covered, not the assertions).
mod common;
use candle_core::{Tensor, Var};
use common::*;
use pyramid_ops::Backend;

const THREADS: [usize; 5] = [1, 2, 3, 5, 8];

fn in_pool<R: Send>(k: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(k)
        .build()
        .unwrap()
        .install(f)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// Runs `f` (named outputs) at every thread count and asserts each output is bit-identical to
/// the single-thread one.
fn assert_invariant(what: &str, f: impl Fn() -> Vec<(&'static str, Vec<u32>)> + Sync) {
    let reference = in_pool(1, &f);
    for &k in &THREADS[1..] {
        let got = in_pool(k, &f);
        for ((name, a), (_, b)) in reference.iter().zip(&got) {
            let first = a.iter().zip(b).position(|(x, y)| x != y);
            assert!(
                a.len() == b.len() && first.is_none(),
                "{what}: {name} differs between 1 and {k} threads (first at {first:?})"
            );
        }
    }
}

#[rustfmt::skip]
const CONV_CASES: &[[usize; 8]] = &[
    // [b, c, h, w, o, k, s, p]
    // 3×3 stride 1, ≥ 32 channels: Winograd (narrow and wide tile rows, padding 0/1/2).
    [1, 32, 12, 12, 32, 3, 1, 1],
    [3, 32, 9, 11, 48, 3, 1, 0],
    [8, 64, 20, 20, 64, 3, 1, 1],
    [33, 32, 8, 8, 32, 3, 1, 1],
    [3, 128, 34, 34, 128, 3, 1, 1],
    [2, 32, 6, 7, 32, 3, 1, 2],
    // 2 × 2 maps: one dense gemm per pass (dense.rs).
    [8, 64, 2, 2, 64, 3, 1, 1],
    // 3×3 stride 1 with 16 channels: the direct kernel (direct.rs).
    [1, 16, 12, 12, 16, 3, 1, 1],
    [33, 16, 8, 8, 16, 3, 1, 1],
    // Above 128×256 channels the weight gradient sums its transforms in place.
    [2, 256, 6, 6, 256, 3, 1, 1],
    [1, 128, 9, 9, 512, 3, 1, 0],
    // im2col: few channels, 1×1 (pointwise and padded), strided, 5×5.
    [3, 3, 16, 16, 8, 3, 1, 1],
    [8, 1, 7, 9, 5, 3, 1, 0],
    [33, 8, 5, 5, 16, 3, 1, 1],
    [8, 64, 6, 6, 128, 1, 1, 0],
    [3, 256, 48, 48, 16, 1, 1, 0],
    [3, 16, 8, 8, 16, 1, 1, 1],
    [8, 32, 15, 15, 48, 3, 2, 1],
    [3, 128, 64, 64, 32, 3, 2, 1],
    [33, 4, 10, 10, 8, 3, 2, 0],
    [2, 256, 8, 8, 256, 3, 2, 1],
    [1, 8, 12, 12, 8, 5, 1, 2],
];

#[test]
fn conv_is_thread_count_invariant() {
    for (i, &[b, c, h, w, o, k, s, p]) in CONV_CASES.iter().enumerate() {
        for (bias, relu) in [(true, i % 2 == 0), (false, i % 2 == 1)] {
            let case = Case {
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
                seed: 100 + i as u64,
            };
            assert_invariant(&format!("{case:?}"), || {
                let out = run_conv(&case, Backend::Fast);
                let mut v = vec![
                    ("y", bits(&out.y)),
                    ("gx", bits(&out.gx)),
                    ("gw", bits(&out.gw)),
                ];
                if let Some(gb) = &out.gb {
                    v.push(("gb", bits(gb)));
                }
                v
            });
        }
    }
}

#[test]
fn pool_is_thread_count_invariant() {
    for (i, shape) in [
        [8usize, 64, 33, 33],
        [3, 128, 16, 16],
        [33, 3, 8, 9],
        [1, 1, 2, 2],
    ]
    .into_iter()
    .enumerate()
    {
        let x = Var::from_tensor(&rand_tensor(&shape, 200 + i as u64)).unwrap();
        assert_invariant(&format!("max_pool2x2 {shape:?}"), || {
            let y = pyramid_ops::max_pool2x2(x.as_tensor(), Backend::Fast).unwrap();
            let r = rand_tensor(y.dims(), 300 + i as u64);
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            vec![("y", bits(&y)), ("gx", bits(g.get(x.as_tensor()).unwrap()))]
        });
    }
}

#[test]
fn batch_norm_is_thread_count_invariant() {
    for (i, shape) in [
        [33usize, 64, 7, 7],
        [3, 128, 16, 16],
        [1, 3, 5, 5],
        [8, 16, 1, 1],
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 400 + 10 * i as u64;
        let x = Var::from_tensor(&rand_tensor(&shape, seed)).unwrap();
        let gamma = Var::from_tensor(&rand_tensor(&[shape[1]], seed + 1)).unwrap();
        let beta = Var::from_tensor(&rand_tensor(&[shape[1]], seed + 2)).unwrap();
        assert_invariant(&format!("batch_norm_train {shape:?}"), || {
            let (y, mean, var) =
                pyramid_ops::batch_norm_train(&x, &gamma, &beta, 1e-5, Backend::Fast).unwrap();
            let r = rand_tensor(y.dims(), seed + 3);
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            vec![
                ("y", bits(&y)),
                ("mean", bits(&mean)),
                ("var", bits(&var)),
                ("gx", bits(g.get(&x).unwrap())),
                ("ggamma", bits(g.get(&gamma).unwrap())),
                ("gbeta", bits(g.get(&beta).unwrap())),
            ]
        });
    }
}

/// `gemm` parallelises over the rows and columns of the destination only, never over the
/// reduction: `Parallelism::Rayon(k)` in a pool of any size gives the bits of
/// `Parallelism::None`. Shapes as the convolutions use them (row-major and transposed operands,
/// accumulating into the destination, the small-matrix path below 64×64, deep reductions).
#[test]
fn gemm_is_parallelism_invariant() {
    use gemm::Parallelism;
    // (m, n, k, lhs transposed, rhs transposed, accumulate)
    let shapes = [
        (64, 2304, 576, false, false, false),
        (512, 512, 1152, false, true, true),
        (128, 4608, 300, false, true, true),
        (512, 144, 4608, false, false, false),
        (256, 1152, 256, true, false, false),
        (64, 60, 4608, false, false, true),
        (16, 300, 27, false, false, false),
        (1000, 32, 512, false, true, false),
    ];
    for (i, &(m, n, k, lt, rt, acc)) in shapes.iter().enumerate() {
        let lhs = rand_vec(m * k, 500 + i as u64);
        let rhs = rand_vec(k * n, 600 + i as u64);
        let init = rand_vec(m * n, 700 + i as u64);
        // (column stride, row stride) of an m×k / k×n operand stored row-major or transposed.
        let (lcs, lrs) = if lt { (m, 1) } else { (1, k) };
        let (rcs, rrs) = if rt { (k, 1) } else { (1, n) };
        let run = |par: Parallelism| {
            let mut dst = init.clone();
            // SAFETY: lhs (m·k), rhs (k·n) and dst (m·n) are Vecs of those lengths, read with the
            // strides of their layouts; dst is a Vec of its own.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    acc,
                    lhs.as_ptr(),
                    lcs as isize,
                    lrs as isize,
                    rhs.as_ptr(),
                    rcs as isize,
                    rrs as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            };
            dst.into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        let reference = run(Parallelism::None);
        for &pool in &THREADS {
            for &par in &THREADS[1..] {
                let got = in_pool(pool, || run(Parallelism::Rayon(par)));
                assert!(
                    got == reference,
                    "gemm {m}x{n}x{k} (case {i}): Rayon({par}) in a {pool}-thread pool differs"
                );
            }
        }
    }
}

/// candle's CPU matmul (`Tensor::matmul`, used by the Linear layers) passes
/// `Parallelism::Rayon(get_num_threads())` to gemm, `get_num_threads` reading
/// `RAYON_NUM_THREADS`: each thread count runs in a child process of this test binary, which
/// prints a digest of forward and backward products of Linear-layer shapes; and a digest of a
/// conv / pool / batch-norm chain run the same way (the whole process at that thread count).
#[test]
fn rayon_num_threads_does_not_change_results() {
    let exe = std::env::current_exe().unwrap();
    let digests: Vec<(usize, String)> = THREADS
        .iter()
        .map(|&k| {
            let out = std::process::Command::new(&exe)
                .args(["child_digests", "--exact", "--ignored", "--nocapture"])
                .args(["--test-threads", "1"])
                .env("RAYON_NUM_THREADS", k.to_string())
                .env("PYRAMID_THREADS_CHILD", "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "child at {k} threads failed: {stdout}"
            );
            // (libtest may print "test child_digests ... " before the first line)
            let lines: Vec<&str> = stdout
                .lines()
                .filter_map(|l| l.find("DIGEST").map(|i| &l[i..]))
                .collect();
            assert_eq!(lines.len(), 2, "child output: {stdout}");
            (k, lines.join("\n"))
        })
        .collect();
    for (k, d) in &digests[1..] {
        assert_eq!(d, &digests[0].1, "1 vs {k} threads (RAYON_NUM_THREADS)");
    }
}

fn fnv(acc: &mut u64, t: &Tensor) {
    for b in bits(t) {
        *acc = (*acc ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
}

/// The child side of [`rayon_num_threads_does_not_change_results`].
#[test]
#[ignore = "run by rayon_num_threads_does_not_change_results in a child process"]
fn child_digests() {
    if std::env::var("PYRAMID_THREADS_CHILD").is_err() {
        return;
    }
    // Linear layers: y = x Wᵀ (+ b), batch 32 and 33; gradients of x and W are matmuls too.
    let mut d = 0xcbf2_9ce4_8422_2325u64;
    for (i, &(b, fin, fout)) in [
        (32, 512, 512),
        (33, 4608, 256),
        (32, 512, 10),
        (1, 300, 700),
    ]
    .iter()
    .enumerate()
    {
        let seed = 800 + 10 * i as u64;
        let x = Var::from_tensor(&rand_tensor(&[b, fin], seed)).unwrap();
        let w = Var::from_tensor(&rand_tensor(&[fout, fin], seed + 1)).unwrap();
        let y = x.matmul(&w.t().unwrap()).unwrap();
        let r = rand_tensor(&[b, fout], seed + 2);
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        fnv(&mut d, &y);
        fnv(&mut d, g.get(&x).unwrap());
        fnv(&mut d, g.get(&w).unwrap());
    }
    // A batched product as well.
    let a = rand_tensor(&[4, 64, 128], 900);
    let bm = rand_tensor(&[4, 128, 96], 901);
    fnv(&mut d, &a.matmul(&bm).unwrap());
    println!("DIGEST matmul {d:016x}");

    // conv → batch norm → ReLU → pool, forward and backward, in the global pool.
    let mut d = 0xcbf2_9ce4_8422_2325u64;
    let x = Var::from_tensor(&rand_tensor(&[8, 32, 16, 16], 910)).unwrap();
    let w = Var::from_tensor(&rand_tensor(&[64, 32, 3, 3], 911)).unwrap();
    let gamma = Var::from_tensor(&rand_tensor(&[64], 912)).unwrap();
    let beta = Var::from_tensor(&rand_tensor(&[64], 913)).unwrap();
    let c = pyramid_ops::conv2d(&x, &w, None, 1, 1, Backend::Fast).unwrap();
    let (n, _, _) = pyramid_ops::batch_norm_train(&c, &gamma, &beta, 1e-5, Backend::Fast).unwrap();
    let y = pyramid_ops::max_pool2x2(&n.relu().unwrap(), Backend::Fast).unwrap();
    let r = rand_tensor(y.dims(), 914);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    fnv(&mut d, &y);
    for v in [&x, &w, &gamma, &beta] {
        fnv(&mut d, g.get(v).unwrap());
    }
    println!("DIGEST ops {d:016x}");
}
