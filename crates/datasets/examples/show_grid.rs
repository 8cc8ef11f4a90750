//! `cargo run -p pyramid-datasets --example show_grid -- KIND [SPLIT] [N] [OUT.png] [DATA_DIR]`
//! prints the `verify` summary of KIND and writes a labelled grid of the first N images of SPLIT.

use std::path::PathBuf;

use pyramid_datasets::{load, show_grid, verify, DatasetKind, Split};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let kind: DatasetKind = a.first().map_or("embedded", |s| s.as_str()).parse()?;
    let split: Split = a.get(1).map_or("train", |s| s.as_str()).parse()?;
    let n: usize = a.get(2).map_or(Ok(36), |s| s.parse())?;
    let out = PathBuf::from(a.get(3).map_or("grid.png", |s| s.as_str()));
    let dir = a.get(4).map(PathBuf::from);
    print!("{}", verify(kind, dir.as_deref())?);
    let d = load(kind, dir.as_deref(), split)?;
    show_grid(&d, n, &out)?;
    println!("wrote {}", out.display());
    Ok(())
}
