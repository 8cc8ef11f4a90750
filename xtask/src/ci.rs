//! `cargo xtask ci [--cuda]`: what CI runs (`.ci/run`, `.github/workflows/ci.yml`), locally:
//! `scripts/test.sh`, i.e. every test, then `cargo fmt --check`, clippy with `-D warnings`,
//! `cargo doc` with rustdoc warnings denied, and `cargo xtask tidy`. `--cuda` also compiles the
//! `cuda` and `cudnn` features with NVIDIA's PyPI wheels (docs/cuda.md); that is not part of
//! the default CI: it needs a 2 GB virtualenv and about 15 minutes.

use anyhow::{bail, Result};
use std::process::Command;

pub fn run(args: &[String]) -> Result<()> {
    let mut c = Command::new("bash");
    c.current_dir(crate::root()).arg("scripts/test.sh");
    crate::status(c)?;
    match args.first().map(String::as_str) {
        None => Ok(()),
        Some("--cuda") => {
            let mut c = Command::new("bash");
            c.current_dir(crate::root()).arg("scripts/cuda-build.sh");
            crate::status(c)
        }
        Some(other) => bail!("unknown flag `{other}` (expected --cuda)"),
    }
}
