//! Runs one training stage (METHOD.md §8): initial evaluation, epochs of train + eval, the
//! schedule's save / cut / reload / stop decisions, and the final reload of the best weights.

use std::time::Instant;

use candle_core::{DType, Tensor, Var, D};
use indicatif::{ProgressBar, ProgressStyle};
use pyramid_datasets::Loader;
use pyramid_losses::{LossInputs, LossSpec};
use pyramid_models::{Mode, Model, Taps};
use pyramid_rng::Rng;
use pyramid_train::metrics::{EpochMetrics, JsonlWriter};
use pyramid_train::schedule::{Mode as MetricMode, StopReason};
use serde::{Deserialize, Serialize};

use crate::config::StageConfig;
use crate::Error;

/// Which parameters a stage trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainable {
    /// Up to and including the compressed block (stage 1, §3.3, §4.3).
    UpToCompressed,
    /// Every parameter (stage 2 and Scratch, as the original did, §13 B1).
    All,
    /// Every parameter except the blocks after the compressed one (`freeze_inherited`).
    AllButFrozen,
}

/// The data a stage sees.
pub struct StageData<'a> {
    pub train: &'a Loader,
    /// The set that drives model selection and the schedule (test, or a held-out val slice).
    pub select: &'a Loader,
    /// The test set when it differs from `select`.
    pub test: Option<&'a Loader>,
}

/// Everything that defines one stage run.
pub struct StageRun<'a> {
    /// For logs, e.g. "forward/pyramid/SVGG14 stage 1".
    pub label: String,
    /// 1 (hint) or 2 (labels; also Scratch and the teacher).
    pub stage: u32,
    pub student: &'a Model,
    pub teacher: Option<&'a Model>,
    pub config: &'a StageConfig,
    pub trainable: Trainable,
    /// Student block whose output the hint matches (its compressed block).
    pub student_tap: Option<String>,
    /// Teacher block whose output is the target (the replaced block D).
    pub teacher_tap: Option<String>,
    /// Dropout and any other draw of the stage.
    pub rng: Rng,
    pub show_progress: bool,
}

/// What a stage produced. Accuracies in percent; hint losses per sample (Σ squared error / N).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageOutcome {
    pub stage: u32,
    pub loss: String,
    /// Training epochs run (the initial evaluation is epoch 0).
    pub epochs: u64,
    /// Epoch of the selected weights (0 = the state the stage started from).
    pub best_epoch: u64,
    /// Monitored metric of the selected weights.
    pub best_metric: f64,
    pub monitored: String,
    /// Test accuracy of the selected weights (for a hint stage: of the whole network after it).
    pub best_test_acc: Option<f64>,
    /// Test accuracy of the weights at the last epoch, before the best ones were reloaded.
    pub last_test_acc: Option<f64>,
    pub stop: Option<StopReason>,
    pub seconds: f64,
    pub images_per_sec: f64,
}

/// Monitored quantity of a stage: a loss for label-free stages, accuracy otherwise.
fn monitors_accuracy(loss: &LossSpec) -> bool {
    loss.needs_labels()
}

/// Losses summed over the batch (MSE_sum, §0); the others are batch means.
fn is_sum_reduced(loss: &LossSpec) -> bool {
    matches!(loss, LossSpec::Hint | LossSpec::LogitMse | LossSpec::Gram)
}

struct EvalResult {
    loss: f64,
    acc: Option<f64>,
    /// Images seen.
    n: usize,
}

impl StageRun<'_> {
    fn trainable_params(&self) -> Vec<(String, Vec<(String, Var)>)> {
        let s = self.student;
        let keep = |after_c: bool| match self.trainable {
            Trainable::All => true,
            Trainable::UpToCompressed | Trainable::AllButFrozen => !after_c,
        };
        let features = s.params_where(|b, r| !b.is_head() && keep(r.is_after_compressed()));
        let head = s.params_where(|b, r| b.is_head() && keep(r.is_after_compressed()));
        vec![("features".into(), features), ("head".into(), head)]
    }

    fn taps(&self, loss: &LossSpec) -> (Taps, Taps) {
        let wants_logits = loss.needs_logits() || loss.needs_labels();
        let student = match (&self.student_tap, loss.needs_features()) {
            (Some(t), true) if !wants_logits => Taps::until(&[t]),
            (Some(t), true) => Taps::of(&[t]),
            _ => Taps::default(),
        };
        let teacher = match (&self.teacher_tap, loss.needs_features()) {
            (Some(t), true) if !loss.needs_logits() => Taps::until(&[t]),
            (Some(t), true) => Taps::of(&[t]),
            _ => Taps::default(),
        };
        (student, teacher)
    }

    /// Loss of one batch (and the logits, when the forward pass produced them).
    fn batch_loss(
        &self,
        images: &Tensor,
        labels: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, Option<Tensor>), Error> {
        let loss = &self.config.loss;
        let (st, tt) = self.taps(loss);
        let out = self.student.forward_taps(images, mode, &st)?;
        let teacher_out = match (self.teacher, loss.needs_teacher()) {
            (Some(t), true) => Some(t.forward_taps(images, Mode::Eval, &tt)?),
            (None, true) => {
                return Err(Error::Stage(format!(
                    "{}: loss `{}` needs a teacher",
                    self.label,
                    loss.name()
                )))
            }
            _ => None,
        };
        let sf = match &self.student_tap {
            Some(t) if loss.needs_features() => Some(out.tap(t)?.clone()),
            _ => None,
        };
        let tf = match (&self.teacher_tap, &teacher_out) {
            (Some(t), Some(o)) if loss.needs_features() => Some(o.tap(t)?.detach()),
            _ => None,
        };
        let tl = teacher_out
            .as_ref()
            .and_then(|o| o.logits.as_ref().map(|l| l.detach()));
        let inputs = LossInputs {
            student_features: sf.as_ref(),
            teacher_features: tf.as_ref(),
            student_gram_pairs: &[],
            teacher_gram_pairs: &[],
            student_logits: out.logits.as_ref(),
            teacher_logits: tl.as_ref(),
            labels: Some(labels),
        };
        let value = loss
            .evaluate(&inputs)
            .map_err(|e| Error::Stage(format!("{}: {e}", self.label)))?;
        Ok((value, out.logits))
    }

    fn evaluate(&self, loader: &Loader, with_loss: bool) -> Result<EvalResult, Error> {
        let mut loss_sum = 0.0;
        let mut correct = 0u64;
        let mut n = 0usize;
        let sum_reduced = is_sum_reduced(&self.config.loss);
        for batch in loader.iter(0) {
            let batch = batch?;
            let b = batch.indices.len();
            let logits = if with_loss {
                let (l, logits) = self.batch_loss(&batch.images, &batch.labels, Mode::Eval)?;
                let v = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                loss_sum += if sum_reduced { v } else { v * b as f64 };
                logits
            } else {
                Some(self.student.forward(&batch.images, Mode::Eval)?)
            };
            if let Some(logits) = logits {
                correct += count_correct(&logits, &batch.labels)?;
            }
            n += b;
        }
        let needs_logits =
            !with_loss || self.config.loss.needs_logits() || self.config.loss.needs_labels();
        Ok(EvalResult {
            loss: loss_sum / n.max(1) as f64,
            acc: needs_logits.then(|| 100.0 * correct as f64 / n.max(1) as f64),
            n,
        })
    }

    /// Test accuracy of the whole network as it is now.
    fn test_accuracy(&self, data: &StageData) -> Result<f64, Error> {
        let test = data.test.unwrap_or(data.select);
        Ok(self.evaluate(test, false)?.acc.unwrap_or(0.0))
    }

    /// Runs the stage to its stop rule and leaves the student at its selected weights.
    pub fn run(self, data: &StageData, log: &mut JsonlWriter) -> Result<StageOutcome, Error> {
        let started = Instant::now();
        let cfg = self.config;
        let accuracy_monitored = monitors_accuracy(&cfg.loss);
        let wanted = if accuracy_monitored {
            MetricMode::Max
        } else {
            MetricMode::Min
        };
        if cfg.schedule.mode() != wanted {
            return Err(Error::Stage(format!(
                "{}: loss `{}` is monitored by {} but the schedule's mode is {:?}; set mode = \"{}\"",
                self.label,
                cfg.loss.name(),
                if accuracy_monitored { "accuracy" } else { "loss" },
                cfg.schedule.mode(),
                if accuracy_monitored { "max" } else { "min" },
            )));
        }
        let mut optimizer = cfg
            .optimizer
            .build(self.trainable_params())
            .map_err(|e| Error::Stage(format!("{}: {e}", self.label)))?;
        let mut schedule = cfg
            .schedule
            .build(optimizer.lrs())
            .map_err(|e| Error::Stage(format!("{}: {e}", self.label)))?;
        let monitored = |r: &EvalResult| {
            if accuracy_monitored {
                r.acc.unwrap_or(0.0)
            } else {
                r.loss
            }
        };
        let separate_test = data.test.is_some();

        // Epoch 0: the starting state is a candidate (§8.2 step 2, §8.3 step 2).
        let t0 = Instant::now();
        let sel = self.evaluate(data.select, true)?;
        let test0 = if separate_test && accuracy_monitored {
            Some(self.evaluate(data.test.unwrap(), true)?)
        } else {
            None
        };
        let d = schedule.initial(monitored(&sel))?;
        let mut best = self.student.snapshot();
        let mut best_epoch = 0;
        let mut best_metric = monitored(&sel);
        let mut best_test_acc = test0.as_ref().map_or(sel.acc, |t| t.acc);
        let mut last_test_acc = best_test_acc;
        log.append(&self.record(
            0,
            None,
            &sel,
            test0.as_ref(),
            optimizer.lr(0),
            t0.elapsed().as_secs_f64(),
            0.0,
            true,
            false,
        ))?;
        tracing::info!(
            "{}: start {} = {:.4}",
            self.label,
            if accuracy_monitored { "acc" } else { "loss" },
            monitored(&sel)
        );
        let mut stop = d.stop;
        let mut images_seen = 0usize;
        let mut train_seconds = 0.0;
        let sum_reduced = is_sum_reduced(&cfg.loss);
        let mut epoch = 0u64;
        while stop.is_none() {
            epoch += 1;
            let te = Instant::now();
            let lr = optimizer.lr(0);
            let bar = self.progress(data.train.num_batches() as u64, epoch);
            let (mut loss_sum, mut correct, mut n) = (0.0, 0u64, 0usize);
            for batch in data.train.iter(epoch) {
                let batch = batch?;
                let b = batch.indices.len();
                let mut rng = self
                    .rng
                    .derive(&format!("epoch{epoch}/batch{}", batch.index));
                let (loss, logits) =
                    self.batch_loss(&batch.images, &batch.labels, Mode::Train(&mut rng))?;
                let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if !v.is_finite() {
                    return Err(Error::Stage(format!(
                        "{}: loss became {v} at epoch {epoch}, batch {}; lower the learning rate",
                        self.label, batch.index
                    )));
                }
                let grads = loss.backward()?;
                optimizer.step(&grads)?;
                loss_sum += if sum_reduced { v } else { v * b as f64 };
                if let (Some(l), true) = (logits, cfg.loss.needs_labels()) {
                    correct += count_correct(&l, &batch.labels)?;
                }
                n += b;
                bar.inc(1);
            }
            bar.finish_and_clear();
            let train_secs = te.elapsed().as_secs_f64();
            train_seconds += train_secs;
            images_seen += n;
            let sel = self.evaluate(data.select, true)?;
            let test = if separate_test && accuracy_monitored {
                Some(self.evaluate(data.test.unwrap(), true)?)
            } else {
                None
            };
            let test_acc = test.as_ref().map_or(sel.acc, |t| t.acc);
            let d = schedule.step(monitored(&sel))?;
            if d.improved {
                best = self.student.snapshot();
                best_epoch = epoch;
                best_metric = monitored(&sel);
                best_test_acc = test_acc;
            }
            last_test_acc = test_acc;
            optimizer.set_lrs(&d.lrs)?;
            if d.reload_best {
                self.student.restore(&best)?;
            }
            let train = EvalResult {
                loss: loss_sum / n.max(1) as f64,
                acc: cfg
                    .loss
                    .needs_labels()
                    .then(|| 100.0 * correct as f64 / n.max(1) as f64),
                n,
            };
            log.append(&self.record(
                epoch,
                Some(&train),
                &sel,
                test.as_ref(),
                lr,
                te.elapsed().as_secs_f64(),
                n as f64 / train_secs,
                d.improved,
                d.cut,
            ))?;
            tracing::info!(
                "{}: epoch {epoch} train loss {:.4}{} | {} {:.4}{}{}{} | lr {:.1e} | {:.1}s",
                self.label,
                train.loss,
                train
                    .acc
                    .map(|a| format!(" acc {a:.2}"))
                    .unwrap_or_default(),
                if separate_test { "val" } else { "test" },
                sel.loss,
                sel.acc.map(|a| format!(" acc {a:.2}")).unwrap_or_default(),
                if d.improved { " *" } else { "" },
                if d.cut { " (lr cut)" } else { "" },
                lr,
                te.elapsed().as_secs_f64()
            );
            stop = d.stop;
        }
        // Reload the selected weights (§8.2 step 8, §8.3 step 7).
        self.student.restore(&best)?;
        if !accuracy_monitored {
            // Bookkeeping of §8.2 step 8: the whole network's accuracy after the hint stage.
            let acc = self.test_accuracy(data)?;
            best_test_acc = Some(acc);
            last_test_acc = None;
        }
        Ok(StageOutcome {
            stage: self.stage,
            loss: cfg.loss.name().to_string(),
            epochs: epoch,
            best_epoch,
            best_metric,
            monitored: if accuracy_monitored {
                format!("{} accuracy", if separate_test { "val" } else { "test" })
            } else {
                format!(
                    "{} {} loss",
                    if separate_test { "val" } else { "test" },
                    cfg.loss.name()
                )
            },
            best_test_acc,
            last_test_acc,
            stop,
            seconds: started.elapsed().as_secs_f64(),
            images_per_sec: images_seen as f64 / train_seconds.max(1e-9),
        })
    }

    fn progress(&self, batches: u64, epoch: u64) -> ProgressBar {
        if !self.show_progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(batches);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} batches, {elapsed}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{} epoch {epoch}", self.label));
        bar
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        epoch: u64,
        train: Option<&EvalResult>,
        sel: &EvalResult,
        test: Option<&EvalResult>,
        lr: f64,
        seconds: f64,
        images_per_sec: f64,
        improved: bool,
        cut: bool,
    ) -> EpochMetrics {
        let (test_loss, test_acc, val_loss, val_acc) = match test {
            Some(t) => (Some(t.loss), t.acc, Some(sel.loss), sel.acc),
            None => (Some(sel.loss), sel.acc, None, None),
        };
        EpochMetrics {
            stage: self.stage,
            epoch,
            train_loss: train.map(|t| t.loss),
            train_acc: train.and_then(|t| t.acc),
            train_images: train.map_or(0, |t| t.n as u64),
            test_loss,
            test_acc,
            val_loss,
            val_acc,
            lr,
            seconds,
            images_per_sec,
            improved,
            cut,
        }
    }
}

/// Number of rows whose arg-max equals the label.
pub fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<u64, Error> {
    let pred = logits.argmax(D::Minus1)?;
    let eq = pred.eq(&labels.to_dtype(pred.dtype())?)?;
    Ok(eq.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as u64)
}

/// Test accuracy (%) of a model on a loader, in eval mode.
pub fn evaluate_accuracy(model: &Model, loader: &Loader) -> Result<f64, Error> {
    Ok(evaluate_model(model, loader)?.1)
}

/// Mean cross-entropy and accuracy (%) of a model on a loader.
pub fn evaluate_model(model: &Model, loader: &Loader) -> Result<(f64, f64), Error> {
    let (mut correct, mut n, mut loss) = (0u64, 0usize, 0f64);
    for batch in loader.iter(0) {
        let batch = batch?;
        let b = batch.indices.len();
        let logits = model.forward(&batch.images, Mode::Eval)?;
        let l = pyramid_losses::cross_entropy(&logits, &batch.labels)
            .map_err(|e| Error::Stage(e.to_string()))?;
        loss += l.to_dtype(DType::F64)?.to_scalar::<f64>()? * b as f64;
        correct += count_correct(&logits, &batch.labels)?;
        n += b;
    }
    Ok((
        loss / n.max(1) as f64,
        100.0 * correct as f64 / n.max(1) as f64,
    ))
}
