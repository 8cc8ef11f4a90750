//! `pyramid`: the command line. Thin: parse, call the libraries, print.

mod data;
mod inspect;
mod latency;
mod log;
mod run;
mod table;

use anyhow::Result;
use clap::{Parser, Subcommand};

// No `#[global_allocator]`: std's (glibc malloc) beat a recycling allocator, mimalloc and
// jemalloc on VGG19 training and on a CPU-config run (docs/benchmarks.md, "Allocator"); `main`
// tells it to keep freed memory (`pyramid_ops::keep_freed_memory`).

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
    /// Accuracy tables in the paper's layout from run directories, with mean ± std over seeds.
    Table(table::TableArgs),
    /// Time inference of VGG19 and every level (the paper's Figure 3) with fresh weights.
    Latency(latency::LatencyArgs),
    /// Redraw a run directory's figures (and report.md), optionally Figure 3 from a latency file.
    Figures(latency::FiguresArgs),
}

fn main() {
    pyramid_ops::keep_freed_memory();
    let cli = Cli::parse();
    let (console, capture) = match &cli.command {
        Command::Run(a) => (a.console(), a.writes_run_log()),
        _ => (log::Console::Normal, false),
    };
    let logging = log::init(console, capture);
    // A mistyped kernel choice would silently run another numerical path.
    if let Some(problem) = pyramid_ops::ConvOptions::env_problem() {
        eprintln!("error: {problem}");
        std::process::exit(1);
    }
    if let Err(e) = run(cli, &logging) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli, logging: &log::Logging) -> Result<()> {
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Run(args) => run::run(args, logging),
        Command::Check(args) => run::check(args),
        Command::Eval(args) => run::eval(args),
        Command::Data(args) => data::run(args, logging),
        Command::Table(args) => table::run(args),
        Command::Latency(args) => latency::run(args),
        Command::Figures(args) => latency::figures(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every subcommand, as `path: --name`, that has no help text.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let path = format!("{path} {}", cmd.get_name()).trim().to_string();
        if cmd.get_about().is_none() && path != "pyramid" {
            out.push(format!("{path} (the subcommand itself)"));
        }
        for arg in cmd.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                let name = match arg.get_long() {
                    Some(l) => format!("--{l}"),
                    None => format!("<{}>", arg.get_id()),
                };
                out.push(format!("{path}: {name}"));
            }
        }
        for sub in cmd.get_subcommands() {
            undocumented(sub, &path, out);
        }
    }

    #[test]
    fn every_argument_has_help() {
        let mut missing = Vec::new();
        undocumented(&super::Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "without help text:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn the_walk_finds_an_argument_without_help() {
        let cmd = clap::Command::new("pyramid").subcommand(
            clap::Command::new("x")
                .about("has help")
                .arg(clap::Arg::new("bare").long("bare")),
        );
        let mut missing = Vec::new();
        undocumented(&cmd, "", &mut missing);
        assert_eq!(missing, ["pyramid x: --bare"]);
    }

    #[test]
    fn the_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
