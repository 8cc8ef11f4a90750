//! `pyramid data fetch|verify|show`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pyramid_datasets::fetch::{fetch_with, FetchOptions, Progress};
use pyramid_datasets::{DatasetKind, Error, Located, Split, VerifyOptions};

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

const DIR_HELP: &str = "Data root (default: $PYRAMID_DATA, else /usr/share/datasets/fashion-mnist \
    for fashion-mnist and ./data for the others). A root given here or by $PYRAMID_DATA must hold \
    the data set; no other folder is tried. Not accepted for embedded";

#[derive(Subcommand)]
enum DataCommand {
    /// Download an official archive, verify its checksum and extract it atomically.
    Fetch {
        /// stl10, cifar100 or cifar10.
        dataset: String,
        /// Folder to unpack into (created if missing; default: $PYRAMID_DATA, then ./data).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Mirror to download from instead of the official host.
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Check counts, sizes and label ranges of a data set on disk; print a summary. Exits
    /// non-zero on an empty split, a wrong image size, or a split count other than the
    /// official one (unless --allow-partial).
    Verify {
        /// fashion-mnist, embedded, stl10, cifar10, cifar100 or cifar100:coarse.
        #[arg(long)]
        dataset: String,
        #[arg(long, help = DIR_HELP)]
        dir: Option<PathBuf>,
        /// Print the summary (with its verdict and problems) as JSON.
        #[arg(long)]
        json: bool,
        /// Accept splits smaller or larger than the official ones (reported as partial).
        #[arg(long)]
        allow_partial: bool,
    },
    /// Write a labelled grid of samples as PNG.
    Show {
        /// fashion-mnist, embedded, stl10, cifar10, cifar100 or cifar100:coarse.
        #[arg(long)]
        dataset: String,
        #[arg(long, help = DIR_HELP)]
        dir: Option<PathBuf>,
        /// Split to show: train or test.
        #[arg(long, default_value = "train")]
        split: String,
        /// Number of images (the first n of the split).
        #[arg(long, default_value_t = 64)]
        n: usize,
        /// PNG file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(a: DataArgs, logging: &crate::log::Logging) -> Result<()> {
    match a.command {
        DataCommand::Fetch {
            dataset,
            dir,
            base_url,
        } => {
            let kind: DatasetKind = dataset.parse()?;
            // In the log's MultiProgress, so a log line never tears it.
            let bar = logging.progress.add(ProgressBar::new(0));
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
        DataCommand::Verify {
            dataset,
            dir,
            json,
            allow_partial,
        } => {
            let kind: DatasetKind = dataset.parse()?;
            let opts = VerifyOptions { allow_partial };
            // A failed verification still prints its summary, then exits non-zero.
            let (summary, failed) = match pyramid_datasets::verify_with(kind, dir.as_deref(), opts)
            {
                Ok(s) => (s, None),
                Err(Error::Verify { summary }) => {
                    let msg = format!(
                        "{kind} in {} failed verification: {}",
                        summary.dir.display(),
                        summary.problems.join("; ")
                    );
                    (*summary, Some(msg))
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{summary}");
            }
            if let Some(msg) = failed {
                anyhow::bail!(msg);
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
            let from = match pyramid_datasets::locate(kind, dir.as_deref())? {
                Located::Embedded => "the embedded set".to_string(),
                Located::Files { dir, .. } => dir.display().to_string(),
            };
            let d = pyramid_datasets::load(kind, dir.as_deref(), split)?;
            pyramid_datasets::show_grid(&d, n, &out)?;
            println!(
                "wrote {} ({} {split} images of {kind} from {from})",
                out.display(),
                n.min(d.len())
            );
        }
    }
    Ok(())
}
