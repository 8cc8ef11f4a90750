//! `cargo xtask quickstart [ARGS]`: the README's main job (ARGS, e.g. `--quiet`, go to
//! `pyramid run`).

use anyhow::Result;

pub fn run(args: &[String]) -> Result<()> {
    let bin = crate::build_pyramid(None)?;
    let mut c = std::process::Command::new(bin);
    c.current_dir(crate::root())
        .args(["run", "configs/quickstart.toml"])
        .args(args);
    crate::status(c)?;
    if args.iter().any(|a| a == "--quiet" || a == "-q") {
        return Ok(());
    }
    eprintln!("\nThe run directory holds every checkpoint, the per-epoch metrics (metrics.jsonl), results.json and report.md.");
    Ok(())
}
