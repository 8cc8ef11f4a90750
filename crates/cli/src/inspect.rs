//! `pyramid inspect`.

use anyhow::{Context, Result};
use clap::Args;
use pyramid_models::{ModelId, ModelOptions, ModelReport, ModelSpec, Scheme};

#[derive(Args)]
pub struct InspectArgs {
    /// VGG19, SVGG17 … SVGG5, or SVGG17B … SVGG5B.
    model: Option<String>,
    /// Every model of both schemes.
    #[arg(long, conflicts_with = "model")]
    all: bool,
    /// Scheme for a bare SVGG name.
    #[arg(long, default_value = "forward")]
    scheme: String,
    /// Number of classes.
    #[arg(long, conflicts_with = "dataset")]
    classes: Option<usize>,
    /// Take the number of classes from a data set: fashion-mnist, embedded, stl10, cifar10,
    /// cifar100 or cifar100:coarse.
    #[arg(long)]
    dataset: Option<String>,
    /// Input height and width (a multiple of 32).
    #[arg(long, default_value_t = 96)]
    input: usize,
    /// Divide every conv width by K.
    #[arg(long, default_value_t = 1)]
    width_div: usize,
    /// Input channels (3, or 1 for grayscale).
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Batch norm after every conv.
    #[arg(long)]
    batch_norm: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn classes_of(dataset: &str) -> Result<usize> {
    let kind: pyramid_datasets::DatasetKind = dataset
        .parse()
        .with_context(|| format!("--dataset {dataset}"))?;
    Ok(kind.num_classes())
}

pub fn run(a: InspectArgs) -> Result<()> {
    let scheme: Scheme = a.scheme.parse()?;
    let classes = match (&a.dataset, a.classes) {
        (Some(d), _) => classes_of(d)?,
        (None, Some(c)) => c,
        (None, None) => 10,
    };
    let options = ModelOptions {
        classes,
        input_size: a.input,
        in_channels: a.channels,
        width_div: a.width_div,
        batch_norm: a.batch_norm,
        ..ModelOptions::default()
    };
    let ids = if a.all {
        ModelId::all()
    } else {
        let name = a.model.as_deref().context("name a model, or pass --all")?;
        vec![ModelId::parse(name, scheme)?]
    };
    let reports = ids
        .into_iter()
        .map(|id| Ok(ModelSpec::of(id, options.clone())?.report()))
        .collect::<Result<Vec<ModelReport>>>()?;
    if a.json {
        let json = if a.all {
            serde_json::to_string_pretty(&reports)?
        } else {
            serde_json::to_string_pretty(&reports[0])?
        };
        println!("{json}");
    } else {
        for r in &reports {
            print_table(r);
        }
    }
    Ok(())
}

fn print_table(r: &ModelReport) {
    let o = &r.options;
    println!(
        "{} ({} scheme, level {}) — {} classes, {}×{}×{} input, width ÷{}{}",
        r.model,
        r.scheme,
        r.level,
        o.classes,
        o.in_channels,
        o.input_size,
        o.input_size,
        o.width_div,
        if o.batch_norm { ", batch norm" } else { "" }
    );
    println!(
        "  {:<6} {:<11} {:<14} {:>12} {:>16}",
        "block", "role", "out shape", "params", "MACs"
    );
    for b in &r.blocks {
        let shape = b
            .out_shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×");
        let role = serde_json::to_value(b.role).unwrap();
        println!(
            "  {:<6} {:<11} {:<14} {:>12} {:>16}",
            b.name,
            role.as_str().unwrap_or(""),
            shape,
            group(b.params as u64),
            group(b.macs)
        );
    }
    println!(
        "  total: {} params, {} conv + {} FC layers, {} MACs ({:.2} G)\n",
        group(r.params as u64),
        r.convs,
        r.fcs,
        group(r.macs),
        r.macs as f64 / 1e9
    );
}

/// 30517834 → "30,517,834".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
