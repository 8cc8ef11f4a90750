//! Loading an experiment's data: train, selection (test or held-out val) and test loaders.

use std::sync::Arc;

use candle_core::Device;
use pyramid_datasets::{Channels, Dataset, Loader, LoaderConfig, Split};

use crate::config::{ExperimentConfig, Selection};
use crate::Error;

/// The loaders of one experiment.
pub struct ExperimentData {
    pub train: Loader,
    /// Drives model selection and the schedules.
    pub select: Loader,
    /// The test set when selection uses a val slice.
    pub test: Option<Loader>,
    pub classes: usize,
    pub train_len: usize,
    pub test_len: usize,
}

impl ExperimentData {
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
        let train = loader(train, d.batch_size, true)?;
        let test = loader(test, d.eval_batch_size, false)?;
        Ok(match val {
            Some(v) => Self {
                train,
                select: loader(v, d.eval_batch_size, false)?,
                test: Some(test),
                classes,
                train_len,
                test_len,
            },
            None => Self {
                train,
                select: test,
                test: None,
                classes,
                train_len,
                test_len,
            },
        })
    }

    pub fn test_loader(&self) -> &Loader {
        self.test.as_ref().unwrap_or(&self.select)
    }
}
