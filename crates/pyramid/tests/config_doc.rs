//! docs/config.md cannot fall behind the config types: every ```toml block in it parses and
//! validates (a whole config as it is, a fragment merged into a small base config), and every
//! key of a serialised config is documented there.

use std::collections::BTreeSet;
use std::path::PathBuf;

use pyramid::config::{MethodSettings, StageConfig, StageOverrides, StagePatch, TeacherChoice};
use pyramid::{ExperimentConfig, Plan};
use pyramid_losses::LossSpec;
use toml::{Table, Value};

fn config_md() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The ```toml blocks of a Markdown text, with the line each starts on.
fn toml_blocks(md: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in md.lines().enumerate() {
        match (&mut current, line.trim_end()) {
            (None, "```toml") => current = Some((i + 1, String::new())),
            (Some(_), "```") => out.extend(current.take()),
            (Some((_, text)), l) => {
                text.push_str(l);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(
        current.is_none(),
        "docs/config.md: a ```toml block is not closed"
    );
    out
}

/// A small valid config that fragments are merged into.
const BASE: &str = r#"
name = "base"
[data]
dataset = "fashion_mnist"
[model]
input_size = 32
width_div = 16
[teacher]
source = "train"
[teacher.recipe]
schedule = { kind = "plateau", stop = "single_stage", max_epochs = 1 }
"#;

/// `patch` merged into `base`: tables merge key by key, anything else replaces; `[teacher]`
/// replaces as a whole, since its keys depend on its `source`.
fn merge(base: &mut Table, patch: Table, top: bool) {
    for (key, value) in patch {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(p)) if !(top && key == "teacher") => {
                merge(b, p, false)
            }
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn validate(text: &str) -> Result<(), String> {
    let cfg = ExperimentConfig::from_toml(text).map_err(|e| e.to_string())?;
    Plan::build(&cfg).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn every_toml_block_of_config_md_is_valid() {
    let blocks = toml_blocks(&config_md());
    assert!(blocks.len() >= 15, "only {} toml blocks", blocks.len());
    let mut whole = 0;
    for (line, text) in &blocks {
        let table: Table = toml::from_str(text)
            .unwrap_or_else(|e| panic!("docs/config.md:{line}: not TOML: {e}\n{text}"));
        let result = if table.contains_key("data") && table.contains_key("teacher") {
            whole += 1;
            validate(text)
        } else {
            let mut base: Table = toml::from_str(BASE).unwrap();
            merge(&mut base, table, true);
            validate(&toml::to_string(&base).unwrap())
        };
        if let Err(e) = result {
            panic!("docs/config.md:{line}: {e}\n{text}");
        }
    }
    assert_eq!(whole, 3, "the three complete examples");
}

#[test]
fn the_merge_of_a_fragment_reaches_validation() {
    // A fragment with a wrong value must fail, or the test above proves nothing.
    let mut base: Table = toml::from_str(BASE).unwrap();
    merge(
        &mut base,
        toml::from_str("[model]\nwidth_div = 3\n").unwrap(),
        true,
    );
    let err = validate(&toml::to_string(&base).unwrap()).unwrap_err();
    assert!(err.contains("width_div = 3"), "{err}");
}

/// Every key of `v`, at any depth.
fn keys(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Table(t) => {
            for (k, v) in t {
                out.insert(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn every_key_of_a_serialised_config_is_documented() {
    let mut cfg = ExperimentConfig::from_toml(
        r#"
[data]
dataset = "stl10"
root = "data"
train_per_class = 10
test_per_class = 10
[teacher]
source = "torchvision"
path = "vgg19.pth"
[teacher.recipe]
loss = { kind = "cross_entropy" }
schedule = { kind = "plateau", stop = "single_stage", max_epochs = 3 }
[run]
on_degenerate = "error"
"#,
    )
    .unwrap();
    // Every optional per-method and per-model key, set.
    let patch = StagePatch {
        loss: Some(LossSpec::Kd {
            temperature: 4.0,
            alpha: 0.9,
        }),
        optimizer: Some(StageConfig::paper_stage1().optimizer),
        schedule: Some(StageConfig::paper_stage1().schedule),
        freeze_inherited: Some(true),
    };
    cfg.method.insert(
        "kd".into(),
        MethodSettings {
            teacher: Some(TeacherChoice::Vgg19),
            temperature: Some(4.0),
            alpha: Some(0.9),
            stage1: Some(patch.clone()),
            stage2: Some(patch.clone()),
            scratch: Some(patch.clone()),
        },
    );
    cfg.overrides.insert(
        "SVGG17B".into(),
        StageOverrides {
            stage1: Some(patch.clone()),
            stage2: Some(patch.clone()),
            scratch: Some(patch),
        },
    );
    let value = Value::try_from(&cfg).unwrap();
    let mut all = BTreeSet::new();
    keys(&value, &mut all);
    // Names chosen by the config author, not keys of the format.
    all.remove("kd");
    all.remove("SVGG17B");
    for top in [
        "name",
        "seed",
        "out_dir",
        "device",
        "schemes",
        "methods",
        "levels",
        "data",
        "model",
        "teacher",
        "stage1",
        "stage2",
        "scratch",
        "method",
        "overrides",
        "run",
    ] {
        assert!(all.contains(top), "`{top}` is not serialised any more");
    }
    // Nested keys are collected too.
    for nested in [
        "val_fraction",
        "hflip",
        "betas",
        "threshold_mode",
        "save_test",
        "temperature",
    ] {
        assert!(all.contains(nested), "`{nested}` missing from {all:?}");
    }
    let md = config_md();
    let missing: Vec<&String> = all
        .iter()
        .filter(|k| !md.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/config.md does not document {missing:?}"
    );
}
