//! `cargo xtask pyramid CONFIG... [--features cuda|cudnn] [--device D] [--quiet]
//! [--no-progress] [-- ARGS]`: runs experiment configs one after another with the release
//! binary (`--quiet`, `--no-progress` and the ARGS go to every `pyramid run`).

use anyhow::{bail, Result};

pub fn run(args: &[String]) -> Result<()> {
    let mut configs = Vec::new();
    let mut features = None;
    let mut passthrough: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--features" => features = it.next().cloned(),
            "--device" => {
                passthrough.push("--device".into());
                passthrough.extend(it.next().cloned());
            }
            "--quiet" | "-q" | "--no-progress" => passthrough.push(a.clone()),
            "--" => passthrough.extend(it.by_ref().cloned()),
            other if other.starts_with('-') => bail!("unknown flag `{other}`"),
            other => configs.push(other.to_string()),
        }
    }
    if configs.is_empty() {
        bail!("usage: cargo xtask pyramid CONFIG... [--features cuda|cudnn] [--device cuda] [--quiet] [--no-progress] [-- ARGS]");
    }
    let bin = crate::build_pyramid(features.as_deref())?;
    for cfg in &configs {
        let mut c = std::process::Command::new(&bin);
        c.current_dir(crate::root())
            .arg("run")
            .arg(cfg)
            .args(&passthrough);
        crate::status(c)?;
    }
    Ok(())
}
