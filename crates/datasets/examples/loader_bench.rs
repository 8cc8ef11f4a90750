//! Measures batch assembly throughput of the loader (CIFAR-like 3×32×32 → 3×96×96, flip,
//! normalise, batch 128) for several thread counts, alone and while the consumer keeps the
//! global rayon pool busy with candle matmuls (as a trainer does).
//!
//! `cargo run --release -p pyramid-datasets --example loader_bench`

use std::time::Instant;

use candle_core::{Device, Tensor};
use pyramid_datasets::loader::LoaderConfig;
use pyramid_datasets::{Dataset, DatasetKind, Loader};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = 128 * 20;
    let d = Dataset {
        name: "synthetic".into(),
        images: (0..n * 3072).map(|i| (i * 31 % 251) as u8).collect(),
        labels: (0..n).map(|i| (i % 100) as u32).collect(),
        n,
        channels: 3,
        height: 32,
        width: 32,
        class_names: (0..100).map(|i| i.to_string()).collect(),
    };
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (512, 512), &dev)?;
    for busy in [false, true] {
        for (threads, prefetch) in [(1, 0), (2, 0), (1, 2), (2, 2)] {
            let mut cfg = LoaderConfig::paper_train(DatasetKind::Cifar10, 1);
            cfg.threads = threads;
            cfg.prefetch = prefetch;
            let l = Loader::new(d.clone(), cfg, &dev)?;
            let t = Instant::now();
            let mut work = 0.0f32;
            for b in l.iter(0) {
                let b = b?;
                if busy {
                    // ~ a trainer step's worth of compute on the global pool
                    for _ in 0..4 {
                        work += a.matmul(&a)?.sum_all()?.to_scalar::<f32>()?;
                    }
                }
                std::hint::black_box(&b.images);
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "busy={busy:5} threads={threads} prefetch={prefetch}: {:.1} ms/batch ({:.0} img/s) {}",
                s * 1e3 / l.num_batches() as f64,
                n as f64 / s,
                if work.is_nan() { "!" } else { "" }
            );
        }
    }
    Ok(())
}
