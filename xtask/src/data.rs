//! `cargo xtask data ...`: forwarded to `pyramid data ...` (fetch, verify, show).

use anyhow::Result;

pub fn run(args: &[String]) -> Result<()> {
    let bin = crate::build_pyramid(None)?;
    let mut c = std::process::Command::new(bin);
    c.current_dir(crate::root()).arg("data").args(args);
    crate::status(c)
}
