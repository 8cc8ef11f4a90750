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
        s.push_str("| Model | Params | MACs | Scratch | Pyramid 2-stages | Δ |\n|---|---:|---:|---:|---:|---:|\n");
        if let Some(t) = &r.teacher {
            s.push_str(&format!(
                "| VGG19 (teacher) | {} | {} | {} ({}) | | |\n",
                millions(t.params),
                mmacs(t.macs),
                pct(t.best_test_acc),
                pct(t.last_test_acc)
            ));
        }
        for l in rows {
            let name = ModelId { level: l, scheme }.name();
            let sc = find(r, &name, "scratch");
            let py = find(r, &name, "pyramid");
            let any = sc.or(py).expect("row exists");
            let cell = |x: Option<&LevelResult>| {
                x.map(|x| format!("{} ({})", pct(x.best_test_acc), pct(x.last_test_acc)))
                    .unwrap_or_default()
            };
            let delta = match (sc, py) {
                (Some(a), Some(b)) => format!("{:+.2}", b.best_test_acc - a.best_test_acc),
                _ => String::new(),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                name,
                millions(any.params),
                mmacs(any.macs),
                cell(sc),
                cell(py),
                delta
            ));
        }
        s.push('\n');
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

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// A compact text table for the terminal.
pub fn terminal_table(r: &Results) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<9} {:<8} {:>9} {:>9} {:>16} {:>16} {:>7}\n",
        "scheme", "model", "params", "MMACs", "Scratch best/last", "Pyramid best/last", "Δ"
    ));
    if let Some(t) = &r.teacher {
        s.push_str(&format!(
            "{:<9} {:<8} {:>9} {:>9.1} {:>16} {:>16} {:>7}\n",
            "-",
            "VGG19",
            t.params,
            t.macs as f64 / 1e6,
            format!("{}/{}", pct(t.best_test_acc), pct(t.last_test_acc)),
            "",
            ""
        ));
    }
    for scheme in Scheme::ALL {
        for l in 1..=5 {
            let name = ModelId { level: l, scheme }.name();
            let sc = find(r, &name, "scratch");
            let py = find(r, &name, "pyramid");
            let Some(any) = sc.or(py) else { continue };
            let cell = |x: Option<&LevelResult>| {
                x.map(|x| format!("{}/{}", pct(x.best_test_acc), pct(x.last_test_acc)))
                    .unwrap_or_default()
            };
            let delta = match (sc, py) {
                (Some(a), Some(b)) => format!("{:+.2}", b.best_test_acc - a.best_test_acc),
                _ => String::new(),
            };
            s.push_str(&format!(
                "{:<9} {:<8} {:>9} {:>9.1} {:>16} {:>16} {:>7}\n",
                scheme.as_str(),
                name,
                any.params,
                any.macs as f64 / 1e6,
                cell(sc),
                cell(py),
                delta
            ));
        }
    }
    s
}
