use candle_core::{Device, Tensor};
use pyramid_models::{fused::profile, InitScheme, Mode, Model, ModelConfig, ModelId, ModelOptions};
use pyramid_rng::Rng;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let div: usize = args.get(1).map_or(16, |s| s.parse().unwrap());
    let bn = args.get(2).map_or(true, |s| s == "bn");
    let steps: usize = args.get(3).map_or(20, |s| s.parse().unwrap());
    let o = ModelOptions {
        input_size: 32,
        in_channels: 1,
        width_div: div,
        batch_norm: bn,
        init: if bn {
            InitScheme::Torchvision
        } else {
            InitScheme::Kaiming
        },
        ..ModelOptions::default()
    };
    let m = Model::new(ModelConfig::new(ModelId::VGG19, o), 0, &Device::Cpu).unwrap();
    let x = Tensor::from_vec(
        Rng::new(1).normal_vec(128 * 1024, 0.0, 1.0),
        (128, 1, 32, 32),
        &Device::Cpu,
    )
    .unwrap();
    let labels = Tensor::from_vec(
        (0..128u32).map(|i| i % 10).collect::<Vec<_>>(),
        128,
        &Device::Cpu,
    )
    .unwrap();
    let mut rng = Rng::new(2);
    m.train_step_ce(&x, &labels, &mut rng).unwrap();
    profile::enable();
    let t = Instant::now();
    for _ in 0..steps {
        let s = m.train_step_ce(&x, &labels, &mut rng).unwrap();
        drop(s);
    }
    let total = t.elapsed().as_secs_f64() / steps as f64 * 1e3;
    let p = profile::take();
    let mut sum = 0.0;
    let mut rows: Vec<_> = p.into_iter().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    for ((k, d), (n, s)) in &rows {
        sum += s;
        println!(
            "{:>8.3} ms  {:>9} {}  (x{})",
            s / steps as f64 * 1e3,
            d,
            k,
            n / steps as u64
        );
    }
    println!(
        "step {total:.2} ms, layers {:.2} ms",
        sum / steps as f64 * 1e3
    );
    let xe = Tensor::from_vec(
        Rng::new(1).normal_vec(500 * 1024, 0.0, 1.0),
        (500, 1, 32, 32),
        &Device::Cpu,
    )
    .unwrap();
    m.forward(&xe, Mode::Eval).unwrap();
    let t = Instant::now();
    for _ in 0..5 {
        m.forward(&xe, Mode::Eval).unwrap();
    }
    println!("eval b500 {:.2} ms", t.elapsed().as_secs_f64() / 5.0 * 1e3);
}
