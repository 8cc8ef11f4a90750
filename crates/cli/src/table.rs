//! `pyramid table`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pyramid::table::{self, Measure, Options};

/// Output formats.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Markdown: one table per group of seeds, data set and scheme.
    Md,
    /// One line per (data set, scheme, model, method), numeric columns.
    Csv,
    /// Structured: groups, tables, and per cell values, mean, std, n, seeds and directories.
    Json,
}

#[derive(Args)]
pub struct TableArgs {
    /// Run directories (each with a results.json). Runs that differ only by their seed are
    /// one group: their cells show mean ± sample std and n.
    #[arg(required = true, value_name = "RUN_DIR")]
    dirs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "md")]
    format: Format,
    /// Show the last epoch's test accuracy instead of the selected (best) epoch's.
    #[arg(long)]
    last: bool,
    /// Show the paper's numbers (its Tables 1–4 and Figure 3) beside ours.
    #[arg(long)]
    paper: bool,
    /// Write to FILE (atomically) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(a: TableArgs) -> Result<()> {
    let runs = table::load_runs(&a.dirs)?;
    let options = Options {
        measure: if a.last { Measure::Last } else { Measure::Best },
        paper: a.paper,
    };
    let tables = table::build(&runs, options)?;
    let text = match a.format {
        Format::Md => tables.markdown(),
        Format::Csv => tables.csv(),
        Format::Json => serde_json::to_string_pretty(&tables.json())? + "\n",
    };
    match &a.out {
        Some(path) => {
            table::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}
