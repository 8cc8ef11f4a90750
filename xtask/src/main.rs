//! `cargo xtask <task>`: project automation (matklad's xtask convention). One module per task;
//! tasks drive `cargo` through the `CARGO` env var and shell out to the `pyramid` binary.

mod bench;
mod ci;
mod data;
mod pyramid;
mod quickstart;
mod slurm;
mod tidy;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

const TASKS: &str = "\
cargo xtask <task>

tasks:
  quickstart [ARGS]        forward + backward pyramid with Scratch baselines on the embedded data (CPU);
                           ARGS (e.g. --quiet) go to `pyramid run`
  pyramid CONFIG... [--features cuda|cudnn] [--device cuda] [--quiet] [--no-progress] [-- ARGS]
                           run experiment configs in sequence with the release `pyramid` binary
  bench [ARGS]             training / inference throughput of VGG19 and SVGG5 (see `cargo xtask bench --help`)
  bench data [ARGS]        input-pipeline throughput vs torchvision's DataLoader (`cargo xtask bench data --help`)
  bench resume [ARGS]      seconds and bytes of the per-epoch resume state (`cargo xtask bench resume --help`)
  data fetch stl10|cifar100|cifar10 [--dir D]
                           download an official archive, verify its checksum, extract atomically
  data verify|show ...     forwarded to `pyramid data ...`
  slurm CONFIG... [--partition P] [--gpus-per-job N] [--time T] [--seeds K] [--dry-run] [--out MANIFEST]
                           one Slurm job per plan step, chained by dependencies (docs/distributed.md)
  slurm status MANIFEST    each job's Slurm state and each step's progress
  tidy                     the workspace's conventions: no private paths, SAFETY comments, no unwrap in libraries, no unused dependencies
  ci [--cuda]              the CI test command; --cuda also compiles the cuda/cudnn features (docs/cuda.md)
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(task) = args.next() else {
        print!("{TASKS}");
        return Ok(());
    };
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "quickstart" => quickstart::run(&rest),
        "pyramid" => pyramid::run(&rest),
        "bench" => bench::run(&rest),
        "data" => data::run(&rest),
        "ci" => ci::run(&rest),
        "slurm" => slurm::run(&rest),
        "tidy" => tidy::run(&rest),
        "help" | "--help" | "-h" => {
            print!("{TASKS}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n\n{TASKS}"),
    }
}

/// The workspace root (the parent of this crate's manifest directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a command, failing with its name when it fails.
pub fn status(mut cmd: Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {shown}");
    let st = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !st.success() {
        bail!("{shown} failed with {st}");
    }
    Ok(())
}

/// `cargo build --release -p pyramid-cli [--features F]`, returning the binary path.
pub fn build_pyramid(features: Option<&str>) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--release", "-p", "pyramid-cli"]);
    if let Some(f) = features {
        c.args(["--features", f]);
    }
    status(c)?;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    Ok(target.join("release").join("pyramid"))
}
