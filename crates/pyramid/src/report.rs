//! `report.md`: the accuracy tables of `table` (the paper's Tables 1–4 layout, one per scheme,
//! best- and last-epoch test accuracy), the Δ against Scratch, warnings and the stage details.

use std::path::PathBuf;

use pyramid_models::{ModelId, Scheme};

use crate::run::{LevelResult, Results};
use crate::table;

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "–".into()
    }
}

fn find<'a>(r: &'a Results, model: &str, method: &str) -> Option<&'a LevelResult> {
    r.levels
        .iter()
        .find(|l| l.model == model && l.method == method)
}

/// The whole report.
pub fn markdown(r: &Results) -> String {
    let mut s = format!("# {} — {}\n\n", r.name, r.dataset);
    if let Some(o) = &r.model_options {
        s.push_str(&format!(
            "Models at {}×{} input, {} channel(s), width ÷{}{}; {} train / {} test images; seed {}; device {}; wall time {:.0} s (this invocation; the teacher and all levels took {:.0} s in all, over every resumed invocation).\n\n",
            o.input_size,
            o.input_size,
            o.in_channels,
            o.width_div,
            if o.batch_norm { ", batch norm" } else { "" },
            r.train_images,
            r.test_images,
            r.seed,
            r.device,
            r.wall_seconds,
            r.teacher
                .iter()
                .chain(&r.levels)
                .map(|l| l.wall_seconds)
                .sum::<f64>()
        ));
        if r.stage1_unlabeled_images > 0 {
            s.push_str(&format!(
                "Pyramid stage 1 also trained on {} unlabeled images.\n\n",
                r.stage1_unlabeled_images
            ));
        }
    }
    s.push_str(
        "Test accuracy (%) of the selected epoch, with the last epoch's in parentheses.\n\n",
    );
    // The accuracy tables are table.rs's, for this one run.
    let run = table::Run {
        dir: PathBuf::new(),
        results: r.clone(),
    };
    match table::build(std::slice::from_ref(&run), table::Options::default()) {
        Ok(tables) => {
            for t in &tables.tables {
                s.push_str(&accuracy_section(t));
            }
        }
        Err(e) => s.push_str(&format!("(no tables: {})\n\n", crate::error_chain(&e))),
    }
    let warned: Vec<&LevelResult> = r
        .teacher
        .iter()
        .chain(r.levels.iter())
        .filter(|l| !l.warnings.is_empty())
        .collect();
    if !warned.is_empty() {
        s.push_str("## Warnings\n\nThese models show signs of not having learned; their numbers above are not comparisons.\n\n");
        for l in warned {
            let at = if l.method == "teacher" {
                "teacher".to_string()
            } else {
                format!("{}/{}/{}", l.scheme, l.method, l.model)
            };
            for w in &l.warnings {
                s.push_str(&format!("- **{at}**: {w}\n"));
            }
        }
        s.push('\n');
    }
    if !r.excluded.is_empty() {
        s.push_str(&format!(
            "Left out: {} (trained with another seed, data set or model options; delete them or use another run directory).\n\n",
            r.excluded.join(", ")
        ));
    }
    s.push_str("## Stages\n\n| Model | Method | Stage | Loss | Epochs | Best epoch | Monitored | Best | Test acc after | Stop | Time (s) | img/s |\n|---|---|---:|---|---:|---:|---|---:|---:|---|---:|---:|\n");
    for l in r.teacher.iter().chain(r.levels.iter()) {
        for st in &l.stages {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.4} | {} | {} | {:.1} | {:.0} |\n",
                l.model,
                l.method,
                st.stage,
                st.loss,
                st.epochs,
                st.best_epoch,
                st.monitored,
                st.best_metric,
                st.best_test_acc.map(pct).unwrap_or_default(),
                st.stop
                    .as_ref()
                    .map(|x| serde_json::to_value(x)
                        .ok()
                        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(String::from))
                        .unwrap_or_default())
                    .unwrap_or_default(),
                st.seconds,
                st.images_per_sec
            ));
        }
    }
    s
}

/// The report's figures section: each figure's PNG embedded, with a link to its SVG (paths
/// relative to the run directory, where `report.md` lies). Empty when there are none.
pub fn figures_section(figures: &[crate::figures::Figure]) -> String {
    if figures.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Figures\n\n");
    for f in figures {
        s.push_str(&format!(
            "### {}\n\n![{}](figures/{}.png)\n\n[SVG](figures/{}.svg)\n\n",
            f.title, f.title, f.name, f.name
        ));
    }
    s
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// One scheme's table (best (last) per cell), then the Δ of every method against Scratch.
fn accuracy_section(t: &table::Table) -> String {
    let style = table::Style {
        best_and_last: true,
        seeds: 1,
    };
    let mut s = format!("## {} scheme\n\n", capitalise(t.scheme.as_str()));
    s.push_str(&t.markdown_grid(table::Measure::Best, style));
    s.push('\n');
    let Some(scratch) = t.columns.iter().position(|m| m == "scratch") else {
        return s;
    };
    let others: Vec<usize> = (0..t.columns.len()).filter(|&i| i != scratch).collect();
    if others.is_empty() {
        return s;
    }
    let mut deltas = String::new();
    for row in &t.rows {
        let best = |i: usize| {
            row.cells
                .get(i)
                .and_then(|c| c.as_ref())
                .map(|c| c.best.mean)
        };
        let d: Vec<String> = others
            .iter()
            .map(|&i| match (best(scratch), best(i)) {
                (Some(a), Some(b)) => format!("{:+.2}", b - a),
                _ => "–".into(),
            })
            .collect();
        deltas.push_str(&format!("| {} | {} |\n", row.model, d.join(" | ")));
    }
    s.push_str(&format!(
        "Δ against Scratch (best-epoch accuracy, points):\n\n| Model | {} |\n|---|{}\n{deltas}\n",
        others
            .iter()
            .map(|&i| table::title(&t.columns[i]))
            .collect::<Vec<_>>()
            .join(" | "),
        "---:|".repeat(others.len())
    ));
    s
}

/// A compact text table for the terminal: best-epoch accuracy per method.
pub fn terminal_table(r: &Results) -> String {
    let cols = table::columns(&[r]);
    let mut s = format!(
        "{:<9} {:<8} {:>9} {:>9}",
        "scheme", "model", "params", "MMACs"
    );
    for c in &cols {
        s.push_str(&format!(" {c:>14}"));
    }
    s.push('\n');
    if let Some(t) = &r.teacher {
        s.push_str(&format!(
            "{:<9} {:<8} {:>9} {:>9.1} {:>14}\n",
            "-",
            "VGG19",
            t.params,
            t.macs as f64 / 1e6,
            pct(t.best_test_acc)
        ));
    }
    for scheme in Scheme::ALL {
        for l in 1..=5 {
            let name = ModelId { level: l, scheme }.name();
            let found: Vec<Option<&LevelResult>> = cols.iter().map(|m| find(r, &name, m)).collect();
            let Some(any) = found.iter().flatten().next() else {
                continue;
            };
            s.push_str(&format!(
                "{:<9} {:<8} {:>9} {:>9.1}",
                scheme.as_str(),
                name,
                any.params,
                any.macs as f64 / 1e6
            ));
            for x in found {
                s.push_str(&format!(
                    " {:>14}",
                    x.map(|x| pct(x.best_test_acc))
                        .unwrap_or_else(|| "–".into())
                ));
            }
            s.push('\n');
        }
    }
    s
}
