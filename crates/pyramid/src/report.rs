//! `report.md`: tables in the shape of the paper's Tables 1–4 (one per scheme), with params
//! and MACs per row, best- and last-epoch test accuracy, and the stage details.

use pyramid_models::{ModelId, Scheme};

use crate::run::{LevelResult, Results};

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "–".into()
    }
}

fn millions(n: usize) -> String {
    format!("{:.3} M", n as f64 / 1e6)
}

fn mmacs(n: u64) -> String {
    format!("{:.1} M", n as f64 / 1e6)
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
    for scheme in Scheme::ALL {
        let rows: Vec<usize> = (1..=5)
            .filter(|&l| {
                let name = ModelId { level: l, scheme }.name();
                r.levels.iter().any(|x| x.model == name)
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        s.push_str(&format!("## {} scheme\n\n", capitalise(scheme.as_str())));
        let cols = columns(r);
        let titles: Vec<String> = cols.iter().map(|m| title(m)).collect();
        s.push_str(&format!(
            "| Model | Params | MACs | {} |\n|---|---:|---:|{}\n",
            titles.join(" | "),
            "---:|".repeat(cols.len())
        ));
        if let Some(t) = &r.teacher {
            s.push_str(&format!(
                "| VGG19 (teacher) | {} | {} | {} ({}){} |{}\n",
                millions(t.params),
                mmacs(t.macs),
                pct(t.best_test_acc),
                pct(t.last_test_acc),
                if t.warnings.is_empty() { "" } else { " ⚠" },
                " |".repeat(cols.len().saturating_sub(1))
            ));
        }
        let others: Vec<&String> = cols.iter().filter(|m| *m != "scratch").collect();
        let mut deltas = String::new();
        for &l in &rows {
            let name = ModelId { level: l, scheme }.name();
            let found: Vec<Option<&LevelResult>> = cols.iter().map(|m| find(r, &name, m)).collect();
            let Some(any) = found.iter().flatten().next() else {
                continue;
            };
            let cells: Vec<String> = found
                .iter()
                .map(|x| {
                    x.map(|x| {
                        format!(
                            "{} ({}){}",
                            pct(x.best_test_acc),
                            pct(x.last_test_acc),
                            if x.warnings.is_empty() { "" } else { " ⚠" }
                        )
                    })
                    .unwrap_or_else(|| "–".into())
                })
                .collect();
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                name,
                millions(any.params),
                mmacs(any.macs),
                cells.join(" | ")
            ));
            let scratch = find(r, &name, "scratch");
            let d: Vec<String> = others
                .iter()
                .map(|m| delta(scratch, find(r, &name, m)))
                .collect();
            deltas.push_str(&format!("| {} | {} |\n", name, d.join(" | ")));
        }
        s.push('\n');
        if cols.iter().any(|m| m == "scratch") && !others.is_empty() {
            s.push_str(&format!(
                "Δ against Scratch (best-epoch accuracy, points):\n\n| Model | {} |\n|---|{}\n{deltas}\n",
                others.iter().map(|m| title(m)).collect::<Vec<_>>().join(" | "),
                "---:|".repeat(others.len())
            ));
        }
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

/// The report's method columns: the configured methods in config order, then any other method
/// found in the run directory, in registry order.
pub fn columns(r: &Results) -> Vec<String> {
    let mut cols: Vec<String> = r.methods.clone();
    for m in crate::method::REGISTRY {
        if !cols.iter().any(|c| c == m.name) && r.levels.iter().any(|l| l.method == m.name) {
            cols.push(m.name.to_string());
        }
    }
    for l in &r.levels {
        if !cols.contains(&l.method) {
            cols.push(l.method.clone());
        }
    }
    cols
}

/// A method's column title (its config name if it is not registered).
pub fn title(method: &str) -> String {
    crate::method::lookup(method)
        .map(|m| m.title.to_string())
        .unwrap_or_else(|_| method.to_string())
}

fn delta(scratch: Option<&LevelResult>, other: Option<&LevelResult>) -> String {
    match (scratch, other) {
        (Some(a), Some(b)) => format!("{:+.2}", b.best_test_acc - a.best_test_acc),
        _ => "–".into(),
    }
}

/// A compact text table for the terminal: best-epoch accuracy per method.
pub fn terminal_table(r: &Results) -> String {
    let cols = columns(r);
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
