//! `pyramid data fetch|verify|show`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pyramid_datasets::fetch::{fetch_with, FetchOptions, Progress};
use pyramid_datasets::{DatasetKind, Split};

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download an official archive, verify its checksum and extract it atomically.
    Fetch {
        /// stl10, cifar100 or cifar10.
        dataset: String,
        /// Data root (default: $PYRAMID_DATA, then ./data).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Mirror to download from instead of the official host.
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Check counts, sizes and label ranges of a data set on disk; print a summary.
    Verify {
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write a labelled grid of samples as PNG.
    Show {
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "train")]
        split: String,
        #[arg(long, default_value_t = 64)]
        n: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(a: DataArgs) -> Result<()> {
    match a.command {
        DataCommand::Fetch {
            dataset,
            dir,
            base_url,
        } => {
            let kind: DatasetKind = dataset.parse()?;
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar.set_message(format!("{kind}"));
            let path = fetch_with(
                kind,
                dir.as_deref(),
                base_url.as_deref(),
                &FetchOptions::default(),
                &mut |p| match p {
                    Progress::Downloading { done, total } => {
                        if let Some(total) = total {
                            bar.set_length(total);
                        }
                        bar.set_position(done);
                    }
                    Progress::Connecting { url } => bar.set_message(format!("{kind} from {url}")),
                    Progress::Verifying => bar.set_message(format!("{kind}: verifying checksum")),
                    Progress::Extracting => bar.set_message(format!("{kind}: extracting")),
                    Progress::AlreadyPresent(_)
                    | Progress::UsingLocalArchive(_)
                    | Progress::Done(_) => {}
                },
            )
            .with_context(|| format!("fetching {kind}"))?;
            bar.finish_and_clear();
            println!("{kind} is ready in {}", path.display());
        }
        DataCommand::Verify { dataset, dir, json } => {
            let kind: DatasetKind = dataset.parse()?;
            let summary = pyramid_datasets::verify(kind, dir.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{summary}");
            }
        }
        DataCommand::Show {
            dataset,
            dir,
            split,
            n,
            out,
        } => {
            let kind: DatasetKind = dataset.parse()?;
            let split = match split.as_str() {
                "train" => Split::Train,
                "test" => Split::Test,
                other => anyhow::bail!("--split {other}: expected train or test"),
            };
            let d = pyramid_datasets::load(kind, dir.as_deref(), split)?;
            pyramid_datasets::show_grid(&d, n, &out)?;
            println!(
                "wrote {} ({} images of {kind})",
                out.display(),
                n.min(d.len())
            );
        }
    }
    Ok(())
}
