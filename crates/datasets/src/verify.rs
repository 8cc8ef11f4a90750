//! Dataset checks (`verify`) and a labelled image grid written as PNG (`show_grid`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::{locate, read_located, shape_problem, DatasetKind, Located, RootOrigin, Split};

/// Facts about one loaded split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitSummary {
    /// Which split.
    pub split: Split,
    /// The dataset's name.
    pub name: String,
    /// Number of images read.
    pub n: usize,
    /// The official size of this split, when known.
    pub expected_n: Option<usize>,
    /// Channels per image.
    pub channels: usize,
    /// Image height, pixels.
    pub height: usize,
    /// Image width, pixels.
    pub width: usize,
    /// Number of classes of the label set.
    pub num_classes: usize,
    /// Smallest label present; `None` for an empty split.
    pub label_min: Option<u32>,
    /// Largest label present; `None` for an empty split.
    pub label_max: Option<u32>,
    /// Number of images of each class, indexed by label.
    pub class_counts: Vec<usize>,
    /// Mean of all pixels / 255.
    pub pixel_mean: f64,
}

impl SplitSummary {
    /// Summarises the loaded split `d`; `expected_n` is its official size, if known.
    pub fn of(split: Split, d: &Dataset, expected_n: Option<usize>) -> Self {
        let sum: u64 = d.images.iter().map(|&v| u64::from(v)).sum();
        Self {
            split,
            name: d.name.clone(),
            n: d.n,
            expected_n,
            channels: d.channels,
            height: d.height,
            width: d.width,
            num_classes: d.num_classes(),
            label_min: d.labels.iter().min().copied(),
            label_max: d.labels.iter().max().copied(),
            class_counts: d.class_counts(),
            pixel_mean: if d.images.is_empty() {
                0.0
            } else {
                sum as f64 / d.images.len() as f64 / 255.0
            },
        }
    }

    /// Whether the count matches the official size (true when unknown).
    pub fn count_ok(&self) -> bool {
        self.expected_n.is_none_or(|e| e == self.n)
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every split has its official size and the native image shape.
    Ok,
    /// Usable, but some split is not of its official size (accepted by `allow_partial`).
    Partial,
    /// See [`Summary::problems`].
    Failed,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The data set checked, as written in configs (e.g. `cifar100:coarse`).
    pub kind: String,
    /// The data root (`<embedded>` for the embedded set).
    pub root: PathBuf,
    /// How the root was chosen (`None` for the embedded set).
    pub origin: Option<RootOrigin>,
    /// The folder the files were read from.
    pub dir: PathBuf,
    /// Class names of the label set, in label order.
    pub class_names: Vec<String>,
    /// One summary per split read (train, then test).
    pub splits: Vec<SplitSummary>,
    /// STL-10 `unlabeled_X.bin` image count, if the file is present.
    pub unlabeled: Option<usize>,
    /// Accepted deviations from the official data set (sizes, under `allow_partial`).
    pub warnings: Vec<String>,
    /// Why the data is unusable (empty split, unofficial size, wrong image shape), each
    /// naming the split or file; empty unless `verdict` is `Failed`.
    pub problems: Vec<String>,
    /// The overall outcome.
    pub verdict: Verdict,
}

/// Options of [`verify_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accept splits whose size is not the official one (the verdict is then `Partial`);
    /// an empty split or a wrong image shape fails regardless.
    pub allow_partial: bool,
}

/// Official (train, test) sizes.
pub fn official_sizes(kind: DatasetKind) -> (usize, usize) {
    let info = kind.info();
    (info.train, info.test)
}

/// [`verify_with`] with the default options (official sizes required).
pub fn verify(kind: DatasetKind, dir: Option<&Path>) -> Result<Summary> {
    verify_with(kind, dir, VerifyOptions::default())
}

/// Loads the train and test splits of `kind` from where [`locate`] finds them (all records
/// are parsed, so every size, label and format check of the readers runs) and summarises
/// them. An empty split, an image shape other than the native one, or (unless
/// `allow_partial`) a size other than the official one is [`Error::Verify`], which carries
/// the summary.
pub fn verify_with(kind: DatasetKind, dir: Option<&Path>, opts: VerifyOptions) -> Result<Summary> {
    let loc = locate(kind, dir)?;
    let (etr, ete) = official_sizes(kind);
    let mut splits = Vec::new();
    let mut class_names = Vec::new();
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    let mut partial = false;
    let mut count = |what: String, n: usize, official: usize| {
        if n == official {
            return;
        }
        let msg = format!("{what}: {n} images, the official {kind} has {official}");
        if n == 0 {
            problems.push(format!("{what} is empty"));
        } else if opts.allow_partial {
            partial = true;
            warnings.push(format!("{msg} (partial, allowed)"));
        } else {
            problems.push(format!("{msg} (--allow-partial accepts this)"));
        }
    };
    let mut shapes = Vec::new();
    for (split, exp) in [(Split::Train, etr), (Split::Test, ete)] {
        let d = read_located(kind, &loc, split)?;
        let s = SplitSummary::of(split, &d, Some(exp));
        count(split.to_string(), s.n, exp);
        shapes.extend(shape_problem(kind, &d).map(|m| format!("{split}: {m}")));
        class_names = d.class_names.clone();
        splits.push(s);
    }
    let (root, origin, data_dir) = match &loc {
        Located::Embedded => (
            PathBuf::from("<embedded>"),
            None,
            PathBuf::from("<embedded>"),
        ),
        Located::Files { root, dir } => {
            (root.path().to_path_buf(), Some(root.origin()), dir.clone())
        }
    };
    let unlabeled = match &kind.info().unlabeled {
        Some(u) if data_dir.join(u.file).exists() => {
            let p = data_dir.join(u.file);
            let n = (u.count)(&p)?;
            count(p.display().to_string(), n, u.official);
            Some(n)
        }
        _ => None,
    };
    problems.extend(shapes);
    let verdict = if !problems.is_empty() {
        Verdict::Failed
    } else if partial {
        Verdict::Partial
    } else {
        Verdict::Ok
    };
    let summary = Summary {
        kind: kind.to_string(),
        root,
        origin,
        dir: data_dir,
        class_names,
        splits,
        unlabeled,
        warnings,
        problems,
        verdict,
    };
    if verdict == Verdict::Failed {
        return Err(Error::Verify {
            summary: Box::new(summary),
        });
    }
    Ok(summary)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Some(o) if self.dir != self.root => writeln!(
                f,
                "{} in {} (data root {}, {o})",
                self.kind,
                self.dir.display(),
                self.root.display()
            )?,
            Some(o) => writeln!(f, "{} in {} ({o})", self.kind, self.dir.display())?,
            None => writeln!(f, "{} ({})", self.kind, self.dir.display())?,
        }
        for s in &self.splits {
            writeln!(
                f,
                "  {:<5} {:>6} images{}  {}×{}×{}  labels {}..={} of {}  mean pixel {:.4}",
                s.split.as_str(),
                s.n,
                match s.expected_n {
                    Some(e) if e != s.n => format!(" (official {e})"),
                    _ => String::new(),
                },
                s.channels,
                s.height,
                s.width,
                s.label_min.map_or("-".into(), |v| v.to_string()),
                s.label_max.map_or("-".into(), |v| v.to_string()),
                s.num_classes,
                s.pixel_mean
            )?;
            let counts: Vec<String> = s
                .class_counts
                .iter()
                .enumerate()
                .map(|(c, n)| {
                    format!(
                        "{}={n}",
                        self.class_names.get(c).map_or("?", |s| s.as_str())
                    )
                })
                .collect();
            writeln!(f, "        per class: {}", counts.join(", "))?;
        }
        if let Some(u) = self.unlabeled {
            writeln!(f, "  unlabeled {u} images")?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        let verdict = match self.verdict {
            Verdict::Ok => "ok",
            Verdict::Partial => "partial (sizes differ from the official data set)",
            Verdict::Failed => "FAILED",
        };
        writeln!(f, "  verdict: {verdict}")
    }
}

// ---------------------------------------------------------------------------------------
// PNG grid

/// Writes a grid of the first `n` images of `dataset`, each labelled "index label name",
/// as an RGB PNG.
pub fn show_grid(dataset: &Dataset, n: usize, out_png: &Path) -> Result<()> {
    let idx: Vec<usize> = (0..n.min(dataset.n)).collect();
    show_grid_indices(dataset, &idx, out_png)
}

/// Like [`show_grid`] for the images at `indices`.
pub fn show_grid_indices(dataset: &Dataset, indices: &[usize], out_png: &Path) -> Result<()> {
    let (w, h, rgb) = render_grid(dataset, indices)?;
    let png = try_encode_png_rgb(w, h, &rgb)?;
    pyramid_fsio::write_atomic(out_png, &png).map_err(|e| Error::io(&e.path, e.source))
}

/// Renders the grid to RGB pixels: returns (width, height, bytes).
pub fn render_grid(d: &Dataset, indices: &[usize]) -> Result<(usize, usize, Vec<u8>)> {
    if indices.is_empty() {
        return Err(Error::Invalid("show_grid: no images to show".into()));
    }
    if let Some(&i) = indices.iter().find(|&&i| i >= d.n) {
        return Err(Error::Invalid(format!(
            "show_grid: index {i} out of range (dataset has {})",
            d.n
        )));
    }
    if !(d.channels == 1 || d.channels == 3) {
        return Err(Error::Invalid(format!(
            "show_grid: {}-channel images",
            d.channels
        )));
    }
    let scale = (96 / d.width.max(d.height).max(1)).max(1);
    let (iw, ih) = (d.width * scale, d.height * scale);
    let cell_w = iw.max(60) + 4;
    let label_h = 2 * (GLYPH_H + 2);
    let cell_h = ih + label_h + 4;
    let cols = (indices.len() as f64).sqrt().ceil() as usize;
    let rows = indices.len().div_ceil(cols);
    let (w, h) = (cols * cell_w, rows * cell_h);
    let mut px = vec![32u8; w * h * 3];
    for (k, &i) in indices.iter().enumerate() {
        let (cx, cy) = ((k % cols) * cell_w + 2, (k / cols) * cell_h + 2);
        for y in 0..ih {
            for x in 0..iw {
                let o = ((cy + y) * w + cx + x) * 3;
                for c in 0..3 {
                    let sc = if d.channels == 1 { 0 } else { c };
                    px[o + c] = d.pixel(i, sc, y / scale, x / scale);
                }
            }
        }
        let l = d.labels[i];
        let name = d.class_names.get(l as usize).map_or("?", |s| s.as_str());
        let chars = (cell_w - 2) / (GLYPH_W + 1);
        let line1: String = format!("#{i} L{l}").chars().take(chars).collect();
        let line2: String = name.chars().take(chars).collect();
        draw_text(&mut px, w, cx, cy + ih + 2, &line1, [255, 255, 0]);
        draw_text(
            &mut px,
            w,
            cx,
            cy + ih + 2 + GLYPH_H + 2,
            &line2,
            [255, 255, 255],
        );
    }
    Ok((w, h, px))
}

const GLYPH_W: usize = 5;
const GLYPH_H: usize = 7;

fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [30, 17, 17, 17, 17, 17, 30],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 17, 10, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '/' => [0, 1, 2, 4, 8, 16, 0],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '#' => [10, 10, 31, 10, 31, 10, 10],
        ' ' => [0; 7],
        _ => [14, 17, 1, 2, 4, 0, 4],
    }
}

fn draw_text(px: &mut [u8], w: usize, x0: usize, y0: usize, s: &str, color: [u8; 3]) {
    let h = px.len() / 3 / w;
    for (k, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        let gx = x0 + k * (GLYPH_W + 1);
        for (r, bits) in g.iter().enumerate() {
            for b in 0..GLYPH_W {
                if bits >> (GLYPH_W - 1 - b) & 1 == 1 {
                    let (x, y) = (gx + b, y0 + r);
                    if x < w && y < h {
                        let o = (y * w + x) * 3;
                        px[o..o + 3].copy_from_slice(&color);
                    }
                }
            }
        }
    }
}

/// Encodes 8-bit RGB pixels (row-major, `w·h·3` bytes) as a PNG file. Panics when the size
/// does not match or an image side is 0; see [`try_encode_png_rgb`].
pub fn encode_png_rgb(w: usize, h: usize, rgb: &[u8]) -> Vec<u8> {
    try_encode_png_rgb(w, h, rgb).unwrap_or_else(|e| panic!("{e}"))
}

/// Encodes 8-bit RGB pixels (row-major, `w·h·3` bytes) as a PNG file (with the `png` crate).
pub fn try_encode_png_rgb(w: usize, h: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    let bad = |msg: String| Error::Invalid(format!("PNG of {w}×{h} RGB pixels: {msg}"));
    if w == 0 || h == 0 || w.checked_mul(h).and_then(|n| n.checked_mul(3)) != Some(rgb.len()) {
        return Err(bad(format!("{} bytes given", rgb.len())));
    }
    let side = |v: usize| u32::try_from(v).map_err(|_| bad("too large".into()));
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, side(w)?, side(h)?);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let png_err = |e: png::EncodingError| bad(e.to_string());
    let mut wr = enc.write_header().map_err(png_err)?;
    wr.write_image_data(rgb).map_err(png_err)?;
    wr.finish().map_err(png_err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let mut r = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    #[test]
    fn png_round_trips_the_pixels() {
        for (w, h) in [(1, 1), (7, 5), (64, 3)] {
            let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect();
            let png = encode_png_rgb(w, h, &rgb);
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            // The IEND chunk and its CRC end every PNG.
            assert_eq!(&png[png.len() - 12..], b"\0\0\0\0IEND\xae\x42\x60\x82");
            let (info, px) = decode(&png);
            assert_eq!((info.width, info.height), (w as u32, h as u32));
            assert_eq!(
                (info.color_type, info.bit_depth),
                (png::ColorType::Rgb, png::BitDepth::Eight)
            );
            assert_eq!(px, rgb, "{w}×{h}");
        }
    }

    #[test]
    fn png_refuses_a_wrong_size() {
        for (w, h, n) in [(2, 2, 11), (2, 2, 13), (0, 3, 0), (3, 0, 0)] {
            let e = try_encode_png_rgb(w, h, &vec![0; n])
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{w}×{h}")), "{e}");
        }
    }

    #[test]
    fn grid_file_decodes_to_the_rendered_pixels() {
        let d = crate::embedded::embedded(Split::Test).unwrap();
        let idx = [0, 5, 999];
        let (w, h, rgb) = render_grid(&d, &idx).unwrap();
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("g.png");
        show_grid_indices(&d, &idx, &out).unwrap();
        let (info, px) = decode(&std::fs::read(&out).unwrap());
        assert_eq!((info.width as usize, info.height as usize), (w, h));
        assert_eq!(px, rgb);
    }
}
