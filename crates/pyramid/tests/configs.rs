//! Every config shipped in configs/ parses, validates and plans; the paper configs carry the
//! paper's hyper-parameters (docs/method.md §9).

use std::path::{Path, PathBuf};

use pyramid::config::{StageKind, TeacherConfig};
use pyramid::{ExperimentConfig, Plan};
use pyramid_models::{ModelId, Scheme};
use pyramid_train::optim::OptimizerConfig;

fn configs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

/// Every `.toml` under `dir`, in its sub-folders too, sorted.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(toml_files(&path));
        } else if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn lr(cfg: &ExperimentConfig, method: &str, id: ModelId, which: StageKind) -> f64 {
    match &cfg.stage_for(method, id, which).optimizer {
        OptimizerConfig::Adam(a) => {
            assert_eq!(a.weight_decay, 5e-4);
            a.lr
        }
        other => panic!("{id} {which:?}: expected Adam, got {other:?}"),
    }
}

#[test]
fn every_shipped_config_is_valid() {
    let mut n = 0;
    for path in toml_files(&configs_dir()) {
        let cfg = ExperimentConfig::from_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let plan = Plan::build(&cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!plan.chains.is_empty(), "{}", path.display());
        assert!(!plan.steps.is_empty(), "{}", path.display());
        n += 1;
    }
    assert!(n >= 5, "only {n} configs found");
}

#[test]
fn paper_configs_carry_the_paper_hyper_parameters() {
    for name in ["stl10.toml", "cifar100.toml"] {
        let cfg = ExperimentConfig::from_file(&configs_dir().join(name)).unwrap();
        let o = cfg.model.options(cfg.data.dataset.num_classes());
        assert_eq!((o.input_size, o.width_div, o.batch_norm), (96, 1, false));
        assert_eq!(cfg.data.batch_size, 128);
        assert_eq!(
            cfg.data.stage1_unlabeled, 0,
            "{name}: the paper used no unlabeled data"
        );
        assert!(matches!(cfg.teacher, TeacherConfig::Torchvision { .. }));
        for level in 1..=5 {
            for scheme in [Scheme::Forward, Scheme::Backward] {
                let id = ModelId::new(level, scheme).unwrap();
                let s1 = if name == "stl10.toml" && id.name() == "SVGG17B" {
                    1e-3 // §9.2
                } else {
                    1e-4
                };
                assert_eq!(
                    lr(&cfg, "pyramid", id, StageKind::Stage1),
                    s1,
                    "{name} {id}"
                );
                assert_eq!(
                    lr(&cfg, "pyramid", id, StageKind::Stage2),
                    s1,
                    "{name} {id}"
                );
                assert_eq!(
                    lr(&cfg, "scratch", id, StageKind::Scratch),
                    1e-4,
                    "{name} {id}"
                );
            }
        }
    }
}

/// Configs that share a run directory must agree on every model they share (the teacher, the
/// Pyramid levels the Gram methods start from): otherwise the second one refuses the
/// directory. Data content is stood in for by a fixed identity (the data sets are not here).
#[test]
fn configs_sharing_a_run_directory_agree_on_the_models_they_share() {
    use pyramid::fingerprint::{DataIdentity, Fingerprints};
    use std::collections::BTreeMap;
    type Seen = BTreeMap<String, (pyramid::fingerprint::Fingerprint, PathBuf)>;
    let mut by_dir: BTreeMap<PathBuf, Seen> = BTreeMap::new();
    let mut shared = 0;
    for path in toml_files(&configs_dir()) {
        let cfg = ExperimentConfig::from_file(&path).unwrap();
        let plan = Plan::build(&cfg).unwrap();
        let data = DataIdentity::new(&cfg, BTreeMap::new());
        let fps = Fingerprints::of_plan(&cfg, &plan, &data, cfg.data.dataset.num_classes());
        let seen = by_dir.entry(cfg.out_dir.clone()).or_default();
        // In plan order, so that the first disagreement is the root one.
        let order =
            std::iter::once("teacher".to_string()).chain(plan.steps.iter().map(|s| s.at.0.clone()));
        for at in order {
            let fp = fps.get(&at).clone();
            match seen.get(&at) {
                Some((theirs, first)) => {
                    shared += 1;
                    assert_eq!(
                        theirs.hash,
                        fp.hash,
                        "{at} in {}: {} and {} disagree: {:#?}",
                        cfg.out_dir.display(),
                        first.display(),
                        path.display(),
                        fp.differences(&theirs.inputs)
                    );
                }
                None => {
                    seen.insert(at, (fp, path.clone()));
                }
            }
        }
    }
    assert!(shared > 20, "only {shared} shared models checked");
}
