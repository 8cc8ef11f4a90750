//! `cargo xtask bench [ARGS]`: builds and runs `pyramid-bench` (crates/bench) in release mode:
//! per-step cases of VGG19 / SVGG5 and whole-epoch cases of the CPU configs (`epoch-d16-bn` …).
//! `cargo xtask bench data [ARGS]` is its input-pipeline bench (`pyramid-bench data`, ours vs
//! torchvision's DataLoader); the arguments pass through unchanged.
//!
//! `--device cuda` builds it with `--features cuda` (candle's CUDA backend; the toolchain
//! environment of scripts/cuda-build.sh / docs/cuda.md must be set) into a
//! separate target directory (`target/cuda`, unless CARGO_TARGET_DIR is set), so the CPU build
//! is not invalidated.

use anyhow::Result;

/// True when `args` ask for the CUDA device (`--device cuda`, `--device=cuda`, `cuda:N`).
fn wants_cuda(args: &[String]) -> bool {
    args.iter().enumerate().any(|(i, a)| {
        let v = match a.strip_prefix("--device=") {
            Some(v) => Some(v),
            None if a == "--device" => args.get(i + 1).map(String::as_str),
            None => None,
        };
        v.is_some_and(|v| v.starts_with("cuda"))
    })
}

pub fn run(args: &[String]) -> Result<()> {
    let mut c = crate::cargo();
    c.args(["run", "--release", "-p", "pyramid-bench"]);
    if wants_cuda(args) {
        c.args(["--features", "cuda"]);
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            c.env("CARGO_TARGET_DIR", crate::root().join("target/cuda"));
        }
    }
    c.arg("--").args(args);
    crate::status(c)
}

#[cfg(test)]
mod tests {
    use super::wants_cuda;

    #[test]
    fn detects_cuda() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(wants_cuda(&v(&["--device", "cuda"])));
        assert!(wants_cuda(&v(&["--iters", "2", "--device=cuda"])));
        assert!(!wants_cuda(&v(&["--device", "cpu"])));
        assert!(!wants_cuda(&v(&["--models", "vgg19"])));
    }
}
