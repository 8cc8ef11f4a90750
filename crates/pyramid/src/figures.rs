//! Figures of a run, as PNG and SVG under `<run>/figures/`: the paper's Figure 3 (seconds to
//! classify 13,000 images per level), accuracy against parameters and against MACs, and the
//! training curves of every level. Text uses the DejaVu Sans font embedded in the binary, so
//! the images are the same on every machine (no system font is looked up).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use pyramid_models::config::LEVEL_DEPTHS;
use pyramid_models::{ModelId, Scheme};
use pyramid_train::metrics::EpochMetrics;

use crate::latency::LatencyReport;
use crate::run::{read_metrics, LevelResult, Results};
use crate::table;
use crate::Error;

/// DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`).
static FONT_TTF: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FONT: &str = "sans-serif";

/// A figure written as `<dir>/<name>.png` and `<dir>/<name>.svg`.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem: `figure3`, `accuracy-params`, `curves-forward-pyramid`.
    pub name: String,
    /// The title drawn above the plot, also the report's caption.
    pub title: String,
    /// The PNG file.
    pub png: PathBuf,
    /// The SVG file.
    pub svg: PathBuf,
}

/// Registers the embedded font under plotters' `sans-serif` family (once per process).
fn font() -> Result<(), Error> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_TTF).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Figure {
            path: PathBuf::from("assets/DejaVuSans.ttf"),
            message: "the embedded font does not parse".into(),
        })
    }
}

/// One line (or a lone point) of a panel.
#[derive(Debug, Clone)]
struct Series {
    label: Option<String>,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    dashed: bool,
    /// Joined by a line (else markers only).
    line: bool,
    /// Marker: filled circle, hollow circle, or a cross (the teacher).
    marker: Marker,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Marker {
    Dot,
    Ring,
    Cross,
    None,
}

/// How tick values are printed.
#[derive(Debug, Clone, Copy)]
enum Ticks {
    /// Whole numbers (epochs, depths).
    Int,
    /// Up to three significant figures.
    Plain,
    /// With a k / M / G suffix (parameters, MACs).
    Si,
}

#[derive(Debug, Clone)]
struct Panel {
    title: String,
    x_desc: String,
    y_desc: String,
    x_log: bool,
    y_log: bool,
    x_ticks: Ticks,
    y_ticks: Ticks,
    series: Vec<Series>,
    /// Vertical dashed lines (stage boundaries) with their labels.
    vlines: Vec<(f64, String)>,
    /// Fixed x range (else from the data).
    x_range: Option<(f64, f64)>,
    /// Fixed x ticks (else 1-2-5 steps).
    x_keys: Option<Vec<f64>>,
}

struct Layout {
    name: String,
    title: String,
    panels: Vec<Panel>,
    cols: usize,
    panel_px: (u32, u32),
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
const GREY: RGBColor = RGBColor(120, 120, 120);

fn fig_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |message| Error::Figure {
        path: path.to_path_buf(),
        message,
    }
}

fn fmt_tick(v: f64, t: Ticks) -> String {
    match t {
        Ticks::Int => format!("{}", v.round() as i64),
        Ticks::Plain => {
            let a = v.abs();
            if a == 0.0 {
                "0".into()
            } else if a >= 100.0 {
                format!("{v:.0}")
            } else if a >= 10.0 {
                trim(format!("{v:.1}"))
            } else if a >= 1.0 {
                trim(format!("{v:.2}"))
            } else if a >= 0.001 {
                trim(format!("{v:.4}"))
            } else {
                format!("{v:.0e}")
            }
        }
        Ticks::Si => {
            let a = v.abs();
            let (d, s) = if a >= 1e9 {
                (1e9, "G")
            } else if a >= 1e6 {
                (1e6, "M")
            } else if a >= 1e3 {
                (1e3, "k")
            } else {
                (1.0, "")
            };
            format!("{}{s}", fmt_tick(v / d, Ticks::Plain))
        }
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The axis range of `values`: padded by 6% (linear) or a factor (log); a single value gets
/// a range around it.
fn range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        let f = (hi / lo).powf(0.06).max(1.15);
        (lo / f, hi * f)
    } else {
        let pad = if hi > lo {
            (hi - lo) * 0.06
        } else {
            lo.abs().max(1.0) * 0.1
        };
        (lo - pad, hi + pad)
    }
}

/// Tick values in `[lo, hi]`: steps of 1, 2 or 5 × 10^k (four to eight of them) on a linear axis;
/// 1, 2, 5 × 10^k on a log axis (1–9 × 10^k when that gives fewer than three).
fn ticks(lo: f64, hi: f64, log: bool, kind: Ticks) -> Vec<f64> {
    let inside = |v: &f64| *v >= lo - 1e-12 * lo.abs() && *v <= hi + 1e-12 * hi.abs();
    if log {
        let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        let pick = |ms: &[f64]| -> Vec<f64> {
            (a..=b)
                .flat_map(|k| ms.iter().map(move |m| m * 10f64.powi(k)))
                .filter(inside)
                .collect()
        };
        let mut v = pick(&[1.0, 2.0, 5.0]);
        if v.len() > 10 {
            v = pick(&[1.0]);
        } else if v.len() < 3 {
            v = pick(&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        }
        return v;
    }
    let raw = (hi - lo) / 8.0;
    if !(raw > 0.0 && raw.is_finite()) {
        return vec![lo];
    }
    let mag = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    if matches!(kind, Ticks::Int) {
        step = step.max(1.0).round();
    }
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Whether positive values span at least `decades` powers of ten (a log axis reads better).
fn spans(values: impl Iterator<Item = f64>, decades: f64) -> bool {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    lo.is_finite() && hi / lo >= 10f64.powf(decades)
}

/// A coordinate whose ticks (and grid lines) are the given values.
struct Keyed<R> {
    inner: R,
    keys: Vec<f64>,
}

impl<R: Ranged<ValueType = f64>> Ranged for Keyed<R> {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.keys.clone()
        }
    }

    fn axis_pixel_range(&self, limit: (i32, i32)) -> std::ops::Range<i32> {
        self.inner.axis_pixel_range(limit)
    }
}

impl Panel {
    fn labels(&self) -> usize {
        self.series.iter().filter(|s| s.label.is_some()).count()
    }

    /// Where the legend covers the fewest points and lines, and whether it still covers
    /// some; None without labelled series.
    fn legend_corner(
        &self,
        (x0, x1): (f64, f64),
        (y0, y1): (f64, f64),
    ) -> Option<(SeriesLabelPosition, bool)> {
        let n = self.labels();
        if n == 0 {
            return None;
        }
        let unit = |v: f64, lo: f64, hi: f64, log: bool| {
            if log {
                (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
            } else {
                (v - lo) / (hi - lo)
            }
        };
        let pts: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| densify(&s.points, s.line))
            .map(|(x, y)| (unit(x, x0, x1, self.x_log), unit(y, y0, y1, self.y_log)))
            .collect();
        Some(emptiest_corner(&pts, n))
    }

    fn values(&self, y: bool) -> impl Iterator<Item = f64> + '_ {
        self.series
            .iter()
            .flat_map(|s| s.points.iter())
            .map(move |p| if y { p.1 } else { p.0 })
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (x0, x1) = self
            .x_range
            .unwrap_or_else(|| range(self.values(false), self.x_log));
        let (y0, mut y1) = range(self.values(true), self.y_log);
        let legend = self.legend_corner((x0, x1), (y0, y1));
        if let Some((_, true)) = legend {
            // No corner is free: raise the top so the data leaves the legend a band above it.
            let keep = 1.0 - legend_height(self.labels());
            y1 = if self.y_log {
                y0 * (y1 / y0).powf(1.0 / keep)
            } else {
                y0 + (y1 - y0) / keep
            };
        }
        let legend = legend.map(|(corner, crowded)| {
            if crowded {
                SeriesLabelPosition::UpperLeft
            } else {
                corner
            }
        });
        let xk = self
            .x_keys
            .clone()
            .unwrap_or_else(|| ticks(x0, x1, self.x_log, self.x_ticks));
        let yk = ticks(y0, y1, self.y_log, self.y_ticks);
        let lin = |a: f64, b: f64, keys| Keyed {
            inner: RangedCoordf64::from(a..b),
            keys,
        };
        let log = |a: f64, b: f64, keys| Keyed {
            inner: LogCoord::<f64>::from((a..b).log_scale()),
            keys,
        };
        let y = (y0, y1);
        match (self.x_log, self.y_log) {
            (false, false) => self.draw_in(area, lin(x0, x1, xk), lin(y0, y1, yk), y, legend),
            (true, false) => self.draw_in(area, log(x0, x1, xk), lin(y0, y1, yk), y, legend),
            (false, true) => self.draw_in(area, lin(x0, x1, xk), log(y0, y1, yk), y, legend),
            (true, true) => self.draw_in(area, log(x0, x1, xk), log(y0, y1, yk), y, legend),
        }
    }

    fn draw_in<DB, X, Y>(
        &self,
        area: &DrawingArea<DB, Shift>,
        x: X,
        y: Y,
        (y0, y1): (f64, f64),
        legend: Option<SeriesLabelPosition>,
    ) -> Result<(), String>
    where
        DB: DrawingBackend,
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FONT, 20))
            .margin(12)
            .margin_right(24)
            .x_label_area_size(52)
            .y_label_area_size(78)
            .build_cartesian_2d(x, y)
            .map_err(|x| e(&x))?;
        let (xt, yt) = (self.x_ticks, self.y_ticks);
        let fx = move |v: &f64| fmt_tick(*v, xt);
        let fy = move |v: &f64| fmt_tick(*v, yt);
        chart
            .configure_mesh()
            .x_desc(&self.x_desc)
            .y_desc(&self.y_desc)
            .x_label_formatter(&fx)
            .y_label_formatter(&fy)
            .x_labels(8)
            .y_labels(8)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(|x| e(&x))?;
        for (v, label) in &self.vlines {
            let style = GREY.stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new(vec![(*v, y0), (*v, y1)], 6, 4, style))
                .map_err(|x| e(&x))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (*v, y1),
                    (FONT, 13).into_font().color(&GREY),
                )))
                .map_err(|x| e(&x))?;
        }
        let mut labelled = false;
        for s in &self.series {
            let style = s.color.stroke_width(2);
            let pts = s.points.clone();
            if s.line && pts.len() > 1 {
                if s.dashed {
                    chart
                        .draw_series(DashedLineSeries::new(pts.clone(), 9, 5, style))
                        .map_err(|x| e(&x))?;
                } else {
                    chart
                        .draw_series(LineSeries::new(pts.clone(), style))
                        .map_err(|x| e(&x))?;
                }
            }
            let c = s.color;
            let ann = match s.marker {
                Marker::Dot => chart.draw_series(
                    pts.iter()
                        .map(|&p| Circle::new(p, 4, c.filled()).into_dyn()),
                ),
                Marker::Ring => chart.draw_series(
                    pts.iter()
                        .map(|&p| Circle::new(p, 5, c.stroke_width(2)).into_dyn()),
                ),
                Marker::Cross => chart.draw_series(
                    pts.iter()
                        .map(|&p| Cross::new(p, 7, c.stroke_width(3)).into_dyn()),
                ),
                Marker::None => chart.draw_series(std::iter::empty::<DynElement<DB, (f64, f64)>>()),
            }
            .map_err(|x| e(&x))?;
            if let Some(label) = &s.label {
                labelled = true;
                let (dashed, line, marker) = (s.dashed, s.line, s.marker);
                ann.label(label).legend(move |(lx, ly)| {
                    let hidden = TRANSPARENT.stroke_width(1);
                    let ls = if line { style } else { hidden };
                    let segments = if dashed {
                        [(0, 6), (9, 15), (18, 24)]
                    } else {
                        [(0, 8), (8, 16), (16, 24)]
                    };
                    let [a, b, d] =
                        segments.map(|(u, v)| PathElement::new(vec![(u, 0), (v, 0)], ls));
                    let (radius, ring) = match (line, marker) {
                        (false, Marker::Dot) => (4, c.filled()),
                        (false, Marker::Ring) => (5, c.stroke_width(2)),
                        _ => (0, hidden),
                    };
                    let cross = if !line && marker == Marker::Cross {
                        c.stroke_width(3)
                    } else {
                        hidden
                    };
                    EmptyElement::at((lx, ly))
                        + a
                        + b
                        + d
                        + Circle::new((12, 0), radius, ring)
                        + PathElement::new(vec![(7, -5), (17, 5)], cross)
                        + PathElement::new(vec![(7, 5), (17, -5)], cross)
                });
            }
        }
        if let (true, Some(position)) = (labelled, legend) {
            chart
                .configure_series_labels()
                .position(position)
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(180, 180, 180))
                .margin(10)
                .draw()
                .map_err(|x| e(&x))?;
        }
        Ok(())
    }
}

/// The points of a series with nine more between neighbours of a line, so that a legend
/// placed to avoid the points also avoids the lines between them.
fn densify(points: &[(f64, f64)], line: bool) -> Vec<(f64, f64)> {
    let mut v = points.to_vec();
    if line {
        for w in points.windows(2) {
            let ((a, b), (c, d)) = (w[0], w[1]);
            v.extend((1..10).map(|i| {
                let t = i as f64 / 10.0;
                (a + (c - a) * t, b + (d - b) * t)
            }));
        }
    }
    v
}

/// The fraction of a panel's height a legend of `labels` entries takes (with its margin).
fn legend_height(labels: usize) -> f64 {
    (0.07 + 0.055 * labels as f64).min(0.9)
}

/// The corner of the plot (in unit coordinates, y up) whose legend-sized box covers the fewest
/// of `pts`, and whether it covers any; ties go to the upper left.
fn emptiest_corner(pts: &[(f64, f64)], labels: usize) -> (SeriesLabelPosition, bool) {
    let (w, h) = (0.42, legend_height(labels));
    let corners = [
        (SeriesLabelPosition::UpperLeft, 0.0, 1.0 - h),
        (SeriesLabelPosition::UpperRight, 1.0 - w, 1.0 - h),
        (SeriesLabelPosition::LowerRight, 1.0 - w, 0.0),
        (SeriesLabelPosition::LowerLeft, 0.0, 0.0),
    ];
    corners
        .into_iter()
        .map(|(c, x, y)| {
            let covered = pts
                .iter()
                .filter(|p| p.0 >= x && p.0 <= x + w && p.1 >= y && p.1 <= y + h)
                .count();
            (c, covered)
        })
        .min_by_key(|c| c.1)
        .map_or((SeriesLabelPosition::UpperLeft, false), |(c, n)| (c, n > 0))
}

impl Layout {
    fn size(&self) -> (u32, u32) {
        let rows = self.panels.len().div_ceil(self.cols.max(1)) as u32;
        let title = if self.title.is_empty() { 0 } else { 44 };
        (
            self.panel_px.0 * self.cols as u32,
            self.panel_px.1 * rows + title,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let area = if self.title.is_empty() {
            root.clone()
        } else {
            root.titled(&self.title, (FONT, 24))
                .map_err(|e| e.to_string())?
        };
        let rows = self.panels.len().div_ceil(self.cols.max(1));
        let cells = area.split_evenly((rows, self.cols.max(1)));
        for (p, cell) in self.panels.iter().zip(cells.iter()) {
            p.draw(cell)?;
        }
        root.present().map_err(|e| e.to_string())
    }

    /// Writes `<dir>/<name>.png` and `.svg`, each atomically.
    fn write(&self, dir: &Path) -> Result<Figure, Error> {
        font()?;
        let (w, h) = self.size();
        let png_path = dir.join(format!("{}.png", self.name));
        let svg_path = dir.join(format!("{}.svg", self.name));
        let mut rgb = vec![0u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            self.draw(root).map_err(fig_err(&png_path))?;
        }
        let png_bytes = encode_png(&rgb, w, h).map_err(fig_err(&png_path))?;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            self.draw(root).map_err(fig_err(&svg_path))?;
        }
        pyramid_fsio::write_atomic(&png_path, &png_bytes)?;
        pyramid_fsio::write_atomic(&svg_path, svg.as_bytes())?;
        Ok(Figure {
            name: self.name.clone(),
            title: self.title.clone(),
            png: png_path,
            svg: svg_path,
        })
    }
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// One model's point of Figure 3.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyPoint {
    /// `-` (VGG19), `forward` or `backward`.
    pub scheme: String,
    /// The paper's depth label: 19, 17, 14, 11, 8, 5.
    pub depth: usize,
    /// Seconds to classify 13,000 images at the measured speed.
    pub seconds_per_13000: f64,
}

/// What Figure 3 shows besides the points: the conditions of the measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySetting {
    /// The device timed on.
    pub device: String,
    /// Input height and width in pixels.
    pub input_size: usize,
    /// Every width divided by this (1 = paper width).
    pub width_div: usize,
    /// Images per timed batch.
    pub batch_size: usize,
}

impl LatencySetting {
    /// The paper's setting (96×96, full width), where its own points are comparable.
    fn is_paper(&self) -> bool {
        self.input_size == 96 && self.width_div == 1
    }
}

/// Writes Figure 3 (`figure3.png`, `.svg`) into `dir`: seconds to classify 13,000 images per
/// depth, forward against backward, each through VGG19; with the paper's points when the
/// measurement is at its setting. None when `points` is empty.
pub fn figure3(
    dir: &Path,
    points: &[LatencyPoint],
    setting: &LatencySetting,
) -> Result<Option<Figure>, Error> {
    if points.is_empty() {
        return Ok(None);
    }
    let teacher: Vec<&LatencyPoint> = points.iter().filter(|p| p.scheme == "-").collect();
    let mut series = Vec::new();
    for (i, scheme) in Scheme::ALL.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = teacher
            .iter()
            .chain(
                points
                    .iter()
                    .filter(|p| p.scheme == scheme.as_str())
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .map(|p| (p.depth as f64, p.seconds_per_13000))
            .collect();
        if pts.len() <= teacher.len() {
            continue;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(Series {
            label: Some(format!("{scheme} (measured)")),
            points: pts,
            color: PALETTE[i],
            dashed: false,
            line: true,
            marker: Marker::Dot,
        });
    }
    if series.is_empty() && !teacher.is_empty() {
        series.push(Series {
            label: Some("VGG19 (measured)".into()),
            points: teacher
                .iter()
                .map(|p| (p.depth as f64, p.seconds_per_13000))
                .collect(),
            color: PALETTE[0],
            dashed: false,
            line: false,
            marker: Marker::Dot,
        });
    }
    if setting.is_paper() {
        for (i, scheme) in Scheme::ALL.iter().enumerate() {
            series.push(Series {
                label: Some(format!("{scheme} (paper, GPU)")),
                points: match scheme {
                    Scheme::Forward => &crate::paper::FIGURE3_FORWARD,
                    Scheme::Backward => &crate::paper::FIGURE3_BACKWARD,
                }
                .iter()
                .map(|p| (p.layers as f64, p.seconds))
                .collect(),
                color: PALETTE[i],
                dashed: true,
                line: true,
                marker: Marker::Ring,
            });
        }
    }
    let mut panel = Panel {
        title: format!(
            "{}×{} input, width ÷{}, batch {}, {}",
            setting.input_size,
            setting.input_size,
            setting.width_div,
            setting.batch_size,
            setting.device
        ),
        x_desc: "Number of layers (SVGG5 … VGG19)".into(),
        y_desc: format!(
            "Seconds to classify 13,000 {}×{} images",
            setting.input_size, setting.input_size
        ),
        x_log: false,
        y_log: false,
        x_ticks: Ticks::Int,
        y_ticks: Ticks::Plain,
        series,
        vlines: Vec::new(),
        x_range: Some((3.5, 20.5)),
        x_keys: Some(LEVEL_DEPTHS.iter().map(|&d| d as f64).collect()),
    };
    panel.y_log = spans(panel.values(true), 1.0);
    let layout = Layout {
        name: "figure3".into(),
        title: "Figure 3: inference time per level".into(),
        panels: vec![panel],
        cols: 1,
        panel_px: (900, 600),
    };
    Ok(Some(layout.write(dir)?))
}

/// Figure 3's points of a `pyramid latency` measurement, and its setting.
pub fn latency_points(r: &LatencyReport) -> (Vec<LatencyPoint>, LatencySetting) {
    let points = r
        .models
        .iter()
        .map(|m| LatencyPoint {
            scheme: m.scheme.clone(),
            depth: m.depth,
            seconds_per_13000: m.latency.seconds_per_13000,
        })
        .collect();
    let first = r.models.first().map(|m| &m.latency);
    let setting = LatencySetting {
        device: first.map(|l| l.device.clone()).unwrap_or_default(),
        input_size: r.options.input_size,
        width_div: r.options.width_div,
        batch_size: first.map_or(0, |l| l.batch_size),
    };
    (points, setting)
}

/// Figure 3's points of a run: the latency recorded with each model, the fastest over the
/// methods that trained the same architecture (as the tables show it: the timing least
/// disturbed by other work on the machine).
fn run_latency_points(r: &Results) -> Option<(Vec<LatencyPoint>, LatencySetting)> {
    let mut by_model: BTreeMap<(String, usize), Vec<f64>> = BTreeMap::new();
    let mut first = None;
    for l in r.teacher.iter().chain(&r.levels) {
        let Some(lat) = &l.latency else { continue };
        first.get_or_insert(lat);
        by_model
            .entry((
                l.scheme.clone(),
                LEVEL_DEPTHS.get(l.level).copied().unwrap_or(0),
            ))
            .or_default()
            .push(lat.seconds_per_13000);
    }
    let lat = first?;
    let points = by_model
        .into_iter()
        .map(|((scheme, depth), v)| LatencyPoint {
            scheme,
            depth,
            seconds_per_13000: v.iter().copied().fold(f64::INFINITY, f64::min),
        })
        .collect();
    let o = r.model_options.as_ref();
    Some((
        points,
        LatencySetting {
            device: lat.device.clone(),
            input_size: lat.input_size,
            width_div: o.map_or(1, |o| o.width_div),
            batch_size: lat.batch_size,
        },
    ))
}

/// Accuracy against parameters or MACs: a line per (method, scheme) through its levels, the
/// teacher as a point.
fn accuracy_figure(r: &Results, by_macs: bool) -> Option<Layout> {
    let x_of = |l: &LevelResult| {
        if by_macs {
            l.macs as f64
        } else {
            l.params as f64
        }
    };
    let mut series = Vec::new();
    for (mi, method) in table::columns(&[r]).iter().enumerate() {
        for scheme in Scheme::ALL {
            let mut pts: Vec<(usize, (f64, f64))> = r
                .levels
                .iter()
                .filter(|l| &l.method == method && l.scheme == scheme.as_str())
                .filter(|l| l.best_test_acc.is_finite())
                .map(|l| (l.level, (x_of(l), l.best_test_acc)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by_key(|p| p.0);
            series.push(Series {
                label: Some(format!("{}, {scheme}", table::title(method))),
                points: pts.into_iter().map(|p| p.1).collect(),
                color: PALETTE[mi % PALETTE.len()],
                dashed: scheme == Scheme::Backward,
                line: true,
                marker: Marker::Dot,
            });
        }
    }
    if let Some(t) = r.teacher.as_ref().filter(|t| t.best_test_acc.is_finite()) {
        series.push(Series {
            label: Some("VGG19 (teacher)".into()),
            points: vec![(x_of(t), t.best_test_acc)],
            color: BLACK,
            dashed: false,
            line: false,
            marker: Marker::Cross,
        });
    }
    if series.is_empty() {
        return None;
    }
    let (what, unit) = if by_macs {
        ("MACs", "multiply-accumulates per image")
    } else {
        ("parameters", "count")
    };
    let mut panel = Panel {
        title: format!("{} — {}", r.name, r.dataset),
        x_desc: format!("{} ({unit}, log scale)", capitalise(what)),
        y_desc: "Test accuracy (%)".into(),
        x_log: true,
        y_log: false,
        x_ticks: Ticks::Si,
        y_ticks: Ticks::Plain,
        series,
        vlines: Vec::new(),
        x_range: None,
        x_keys: None,
    };
    // Parameters of one run span less than a decade: a log axis only when they span more.
    panel.x_log = spans(panel.values(false), 1.0);
    if !panel.x_log {
        panel.x_desc = format!("{} ({unit})", capitalise(what));
    }
    Some(Layout {
        name: if by_macs {
            "accuracy-macs"
        } else {
            "accuracy-params"
        }
        .into(),
        title: format!("Test accuracy against {what}"),
        panels: vec![panel],
        cols: 1,
        panel_px: (960, 640),
    })
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// The two panels (test accuracy, train loss) of one model's metrics, epochs of successive
/// stages laid end to end with the boundaries marked.
fn curve_panels(name: &str, metrics: &[EpochMetrics], color: RGBColor) -> [Panel; 2] {
    let (mut acc, mut loss, mut vlines) = (Vec::new(), Vec::new(), Vec::new());
    let (mut offset, mut last_x, mut stage) = (0.0, 0.0, None);
    for m in metrics {
        if stage.is_some_and(|s| s != m.stage) {
            offset = last_x;
            vlines.push((offset, format!(" stage {}", m.stage)));
        }
        stage = Some(m.stage);
        let x = offset + m.epoch as f64;
        last_x = x;
        if let Some(a) = m.test_acc.filter(|a| a.is_finite()) {
            acc.push((x, a));
        }
        if let Some(l) = m.train_loss.filter(|l| l.is_finite()) {
            loss.push((x, l));
        }
    }
    let x_range = Some((0.0, last_x.max(1.0)));
    let mk = |y_desc: &str, pts: Vec<(f64, f64)>, log: bool| Panel {
        title: name.to_string(),
        x_desc: "Epoch (stages in sequence)".into(),
        y_desc: y_desc.into(),
        x_log: false,
        y_log: log,
        x_ticks: Ticks::Int,
        y_ticks: Ticks::Plain,
        series: vec![Series {
            label: None,
            // Dots mark the epochs while they stay apart.
            marker: if pts.len() <= 40 {
                Marker::Dot
            } else {
                Marker::None
            },
            points: pts,
            color,
            dashed: false,
            line: true,
        }],
        vlines: vlines.clone(),
        x_range,
        x_keys: None,
    };
    let loss_log = spans(loss.iter().map(|p| p.1), 1.0);
    [
        mk("Test accuracy (%)", acc, false),
        mk(
            if loss_log {
                "Train loss (log scale)"
            } else {
                "Train loss"
            },
            loss,
            loss_log,
        ),
    ]
}

/// Training curves of the teacher, and of every (scheme, method) chain: one column per level.
fn curve_figures(out: &Path, r: &Results) -> Result<Vec<Layout>, Error> {
    let mut layouts = Vec::new();
    let metrics_of = |dir: PathBuf| -> Result<Option<Vec<EpochMetrics>>, Error> {
        if dir.join("metrics.jsonl").exists() {
            Ok(Some(read_metrics(&dir)?))
        } else {
            Ok(None)
        }
    };
    if r.teacher.is_some() {
        if let Some(m) = metrics_of(out.join("teacher"))?.filter(|m| !m.is_empty()) {
            let [a, l] = curve_panels("VGG19", &m, BLACK);
            layouts.push(Layout {
                name: "curves-teacher".into(),
                title: "Training curves: teacher".into(),
                panels: vec![a, l],
                cols: 2,
                panel_px: (520, 380),
            });
        }
    }
    for (mi, method) in table::columns(&[r]).iter().enumerate() {
        for scheme in Scheme::ALL {
            let mut levels: Vec<&LevelResult> = r
                .levels
                .iter()
                .filter(|l| &l.method == method && l.scheme == scheme.as_str())
                .collect();
            levels.sort_by_key(|l| l.level);
            let mut top = Vec::new();
            let mut bottom = Vec::new();
            for l in levels {
                let dir = out.join(scheme.as_str()).join(method).join(&l.model);
                let Some(m) = metrics_of(dir)?.filter(|m| !m.is_empty()) else {
                    continue;
                };
                let name = ModelId {
                    level: l.level,
                    scheme,
                }
                .name();
                let [a, b] = curve_panels(&name, &m, PALETTE[mi % PALETTE.len()]);
                top.push(a);
                bottom.push(b);
            }
            if top.is_empty() {
                continue;
            }
            let cols = top.len();
            top.extend(bottom);
            layouts.push(Layout {
                name: format!("curves-{scheme}-{method}"),
                title: format!("Training curves: {}, {scheme} scheme", table::title(method)),
                panels: top,
                cols,
                panel_px: (400, 340),
            });
        }
    }
    Ok(layouts)
}

/// Draws every figure of a run into `<out>/figures/`: Figure 3 from the latencies recorded
/// with the models, accuracy against parameters and MACs, and the training curves read from
/// each model's `metrics.jsonl`. Returns what it wrote (nothing for a run without results).
pub fn render(out: &Path, r: &Results) -> Result<Vec<Figure>, Error> {
    let dir = out.join("figures");
    let mut made = Vec::new();
    if let Some((points, setting)) = run_latency_points(r) {
        made.extend(figure3(&dir, &points, &setting)?);
    }
    for by_macs in [false, true] {
        if let Some(l) = accuracy_figure(r, by_macs) {
            made.push(l.write(&dir)?);
        }
    }
    for l in curve_figures(out, r)? {
        made.push(l.write(&dir)?);
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_as_numbers() {
        assert_eq!(fmt_tick(3_956_874.0, Ticks::Si), "3.96M");
        assert_eq!(fmt_tick(2_000.0, Ticks::Si), "2k");
        assert_eq!(fmt_tick(17.89, Ticks::Plain), "17.9");
        assert_eq!(fmt_tick(0.25, Ticks::Plain), "0.25");
        assert_eq!(fmt_tick(11.0, Ticks::Int), "11");
    }

    #[test]
    fn ticks_step_by_1_2_5() {
        assert_eq!(
            ticks(0.0, 13.0, false, Ticks::Plain),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
        );
        assert_eq!(ticks(0.57, 7.5, true, Ticks::Plain), vec![1.0, 2.0, 5.0]);
        assert_eq!(
            ticks(3.0, 9.5, true, Ticks::Plain),
            vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        );
        assert_eq!(ticks(0.0, 3.0, false, Ticks::Int), vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn log_only_across_decades() {
        assert!(spans([1.0, 10.0].into_iter(), 1.0));
        assert!(!spans([4.43, 17.89].into_iter(), 1.0));
        let (lo, hi) = range([10.0, 20.0].into_iter(), false);
        assert!((lo - 9.4).abs() < 1e-9 && (hi - 20.6).abs() < 1e-9);
    }

    #[test]
    fn paper_vgg19_over_svgg5_is_4_04() {
        let ratio = crate::paper::figure3_seconds("VGG19").unwrap()
            / crate::paper::figure3_seconds("SVGG5").unwrap();
        assert!((ratio - 4.04).abs() < 0.005);
    }
}
