//! Loading an experiment's data: train, selection (test or held-out val) and test loaders.

use std::sync::Arc;

use candle_core::Device;
use pyramid_datasets::stl10::UnlabeledStl10;
use pyramid_datasets::{Channels, Dataset, Loader, LoaderConfig, Split};
use pyramid_rng::Rng;

use crate::config::{ExperimentConfig, Selection};
use crate::fingerprint::{DataIdentity, SplitIdentity};
use crate::Error;

/// The loaders of one experiment.
pub struct ExperimentData {
    /// Training batches (shuffled, augmented; without the held-out val slice when there is one).
    pub train: Loader,
    /// Drives model selection and the schedules.
    pub select: Loader,
    /// The test set when selection uses a val slice.
    pub test: Option<Loader>,
    /// Pyramid stage 1's training images when `[data] stage1_unlabeled > 0`: the labelled
    /// training images followed by the chosen unlabeled ones (their label 0 is never read).
    pub stage1_train: Option<Loader>,
    /// Number of classes of the data set's label set.
    pub classes: usize,
    /// Training images fed (after `train_per_class` and without the val slice).
    pub train_len: usize,
    /// Test images (after `test_per_class`).
    pub test_len: usize,
    /// What is fed, for fingerprints: settings, split sizes and content hashes.
    pub identity: DataIdentity,
}

impl ExperimentData {
    /// Loads the splits `cfg` names, applies subsets and the val split, and builds the loaders on
    /// `device`.
    pub fn load(cfg: &ExperimentConfig, device: &Device) -> Result<Self, Error> {
        let d = &cfg.data;
        let root = d.root.as_deref();
        let mut train = pyramid_datasets::load(d.dataset, root, Split::Train)?;
        let mut test = pyramid_datasets::load(d.dataset, root, Split::Test)?;
        if let Some(k) = d.train_per_class {
            train = train.class_balanced_subset(k, cfg.seed);
        }
        if let Some(k) = d.test_per_class {
            test = test.class_balanced_subset(k, cfg.seed);
        }
        let (train, val) = match d.selection {
            Selection::Test => (train, None),
            Selection::Val => {
                let (t, v) = train.split_holdout(d.val_fraction, cfg.seed);
                (t, Some(v))
            }
        };
        let mut splits = std::collections::BTreeMap::new();
        splits.insert("train".to_string(), SplitIdentity::of(&train));
        splits.insert("test".to_string(), SplitIdentity::of(&test));
        if let Some(v) = &val {
            splits.insert("val".to_string(), SplitIdentity::of(v));
        }
        for (name, split) in [("train", &train), ("test", &test)] {
            if split.is_empty() {
                return Err(Error::Config {
                    path: "<config>".into(),
                    message: format!("[data] the {name} split of {} is empty", d.dataset),
                });
            }
        }
        let classes = d.dataset.num_classes();
        let in_c = cfg.model.in_channels;
        if in_c == 1 && train.channels != 1 {
            return Err(Error::Config {
                path: "<config>".into(),
                message: format!(
                    "[model] in_channels = 1 but {} has {} channels",
                    d.dataset, train.channels
                ),
            });
        }
        let base = |batch: usize, shuffle: bool| LoaderConfig {
            batch_size: batch,
            shuffle,
            augment: if shuffle {
                d.augment
            } else {
                pyramid_datasets::Augment::none()
            },
            size: Some((cfg.model.input_size, cfg.model.input_size)),
            channels: if in_c == 3 {
                Channels::Rgb
            } else {
                Channels::Keep
            },
            normalize: d.dataset.normalize(in_c),
            seed: cfg.seed,
            prefetch: 2,
            threads: d.loader_threads,
        };
        let loader = |ds: Dataset, batch, shuffle| -> Result<Loader, Error> {
            Ok(Loader::new(Arc::new(ds), base(batch, shuffle), device)?)
        };
        let (train_len, test_len) = (train.len(), test.len());
        let stage1_train = match d.stage1_unlabeled {
            0 => None,
            n => {
                let extra = unlabeled_subset(cfg, n)?;
                splits.insert("stage1_unlabeled".to_string(), SplitIdentity::of(&extra));
                let joined = train.concat(&extra).map_err(|m| Error::Config {
                    path: "<config>".into(),
                    message: format!("[data] stage1_unlabeled: {m}"),
                })?;
                Some(loader(joined, d.batch_size, true)?)
            }
        };
        let identity = DataIdentity::new(cfg, splits);
        let train = loader(train, d.batch_size, true)?;
        let test = loader(test, d.eval_batch_size, false)?;
        Ok(match val {
            Some(v) => Self {
                train,
                select: loader(v, d.eval_batch_size, false)?,
                test: Some(test),
                stage1_train,
                classes,
                train_len,
                test_len,
                identity,
            },
            None => Self {
                train,
                select: test,
                test: None,
                stage1_train,
                classes,
                train_len,
                test_len,
                identity,
            },
        })
    }

    /// The training loader of a pyramid stage 1 (with the unlabeled images, if configured).
    pub fn stage1_loader(&self) -> &Loader {
        self.stage1_train.as_ref().unwrap_or(&self.train)
    }

    /// The loader of the test split (the selection loader when selection is on the test set).
    pub fn test_loader(&self) -> &Loader {
        self.test.as_ref().unwrap_or(&self.select)
    }
}

/// `n` images of STL10's unlabeled split, a seeded choice without repetition, in file order
/// (sequential reads), labelled 0.
fn unlabeled_subset(cfg: &ExperimentConfig, n: usize) -> Result<Dataset, Error> {
    let root = pyramid_datasets::resolve_root(cfg.data.dataset, cfg.data.root.as_deref());
    let file = UnlabeledStl10::open(&root)?;
    if n > file.len() {
        return Err(Error::Config {
            path: "<config>".into(),
            message: format!(
                "[data] stage1_unlabeled = {n}, but {} holds only {} images",
                file.path().display(),
                file.len()
            ),
        });
    }
    let mut idx = Rng::stream(cfg.seed, "data/stage1_unlabeled").permutation(file.len());
    idx.truncate(n);
    idx.sort_unstable();
    tracing::info!(
        "stage 1: adding {n} of {} unlabeled STL10 images to the training images",
        file.len()
    );
    Ok(file.subset(&idx)?)
}
