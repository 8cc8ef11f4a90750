//! `pyramid`: the command line. Thin: parse, call the libraries, print.

mod data;
mod inspect;
mod latency;
mod run;

use anyhow::Result;
use clap::{Parser, Subcommand};

// No `#[global_allocator]`: std's (glibc malloc) beat a recycling allocator, mimalloc and
// jemalloc on VGG19 training and on a CPU-config run (docs/benchmarks.md, "Allocator").

#[derive(Parser)]
#[command(
    name = "pyramid",
    version,
    about = "Chained knowledge distillation (VGG19 → SVGG17 … SVGG5)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's blocks, roles, output shapes, parameters, conv/FC counts and MACs.
    Inspect(inspect::InspectArgs),
    /// Run (or resume) an experiment: teacher, then every level of every chain.
    Run(run::RunArgs),
    /// Validate a config, its whole plan and its data, without training or writing anything.
    Check(run::CheckArgs),
    /// Accuracy and loss of a checkpoint on a data set.
    Eval(run::EvalArgs),
    /// Data sets: fetch official archives, verify files on disk, show samples.
    Data(data::DataArgs),
    /// Time inference of VGG19 and every level (the paper's Figure 3) with fresh weights.
    Latency(latency::LatencyArgs),
    /// Redraw a run directory's figures (and report.md), optionally Figure 3 from a latency file.
    Figures(latency::FiguresArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, never in piped or redirected logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A mistyped kernel choice would silently run another numerical path.
    if let Some(problem) = pyramid_ops::ConvOptions::env_problem() {
        eprintln!("error: {problem}");
        std::process::exit(1);
    }
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Run(args) => run::run(args),
        Command::Check(args) => run::check(args),
        Command::Eval(args) => run::eval(args),
        Command::Data(args) => data::run(args),
        Command::Latency(args) => latency::run(args),
        Command::Figures(args) => latency::figures(args),
    }
}
