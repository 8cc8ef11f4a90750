//! Runs one training stage (METHOD.md §8): initial evaluation, epochs of train + eval, the
//! schedule's save / cut / reload / stop decisions, and the final reload of the best weights.

use std::time::Instant;

use candle_core::{DType, Tensor, Var, D};
use indicatif::{ProgressBar, ProgressStyle};
use pyramid_datasets::Loader;
use pyramid_losses::{LossInputs, Monitor, Reduction};
use pyramid_models::{Adapter, BlockKind, Mode, Model, Taps};
use pyramid_rng::Rng;
use pyramid_train::metrics::{EpochMetrics, JsonlWriter};
use pyramid_train::schedule::StopReason;
use serde::{Deserialize, Serialize};

use crate::method::TrainSet;
use crate::plan::StagePlan;
use crate::Error;

/// The data a stage sees.
pub struct StageData<'a> {
    pub train: &'a Loader,
    /// The set that drives model selection and the schedule (test, or a held-out val slice).
    pub select: &'a Loader,
    /// The test set when it differs from `select`.
    pub test: Option<&'a Loader>,
}

/// Named parameter groups, as the optimiser takes them.
type ParamGroups = Vec<(String, Vec<(String, Var)>)>;

/// One stage of the plan, bound to its models.
pub struct StageRun<'a> {
    /// For logs, e.g. "forward/pyramid/SVGG14 stage 1".
    pub label: String,
    pub plan: &'a StagePlan,
    pub student: &'a Model,
    pub teacher: Option<&'a Model>,
    /// The FitNet regressor, when the plan's feature pair has one.
    pub adapter: Option<&'a Adapter>,
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

struct EvalResult {
    loss: f64,
    acc: Option<f64>,
    /// Images seen.
    n: usize,
}

impl StageRun<'_> {
    /// The parameters the plan trains, grouped as `features`, `head` and `regressor` (the
    /// names an optimiser's `groups` overrides refer to).
    fn trainable_params(&self) -> Result<ParamGroups, Error> {
        let params = match &self.plan.trains {
            TrainSet::All => self.student.params().to_vec(),
            TrainSet::UpTo { tap } => self.student.params_up_to(tap)?,
        };
        let is_head = |name: &str| {
            BlockKind::from_name(name.split('.').next().unwrap_or("")).is_some_and(|b| b.is_head())
        };
        let (head, features): (Vec<_>, Vec<_>) = params.into_iter().partition(|(n, _)| is_head(n));
        let mut groups = vec![
            ("features".to_string(), features),
            ("head".to_string(), head),
        ];
        if let Some(a) = self.adapter.filter(|a| !a.params().is_empty()) {
            groups.push(("regressor".to_string(), a.params()));
        }
        Ok(groups)
    }

    /// Loss of one batch (and the logits, when the forward pass produced them).
    fn batch_loss(
        &self,
        images: &Tensor,
        labels: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, Option<Tensor>), Error> {
        let plan = self.plan;
        let train = mode.is_train();
        let student_taps = Taps {
            names: plan.student_taps(),
            stop_early: !plan.student_logits,
        };
        let out = self.student.forward_taps(images, mode, &student_taps)?;
        let teacher_out = match (self.teacher, plan.uses_teacher()) {
            (Some(t), true) => {
                let taps = Taps {
                    names: plan.teacher_taps(),
                    stop_early: !plan.teacher_logits,
                };
                Some(t.forward_taps(images, Mode::Eval, &taps)?)
            }
            (None, true) => {
                return Err(Error::Stage(format!(
                    "{}: the plan's loss reads a teacher, but none was given",
                    self.label
                )))
            }
            _ => None,
        };
        let (mut sf, mut tf) = (None, None);
        if let Some(f) = &plan.features {
            let x = out.tap(&f.student)?;
            sf = Some(match self.adapter {
                Some(a) => a.forward(x, train)?,
                None => x.clone(),
            });
            tf = teacher_out
                .as_ref()
                .map(|o| o.tap(&f.teacher).map(|t| t.detach()))
                .transpose()?;
        }
        let mut student_pairs = Vec::new();
        let mut teacher_pairs = Vec::new();
        for p in &plan.gram_pairs {
            student_pairs.push((
                out.tap(&p.student.0)?.clone(),
                out.tap(&p.student.1)?.clone(),
            ));
            if let Some(o) = &teacher_out {
                teacher_pairs.push((o.tap(&p.teacher.0)?.detach(), o.tap(&p.teacher.1)?.detach()));
            }
        }
        let tl = teacher_out
            .as_ref()
            .and_then(|o| o.logits.as_ref().map(|l| l.detach()));
        let inputs = LossInputs {
            student_features: sf.as_ref(),
            teacher_features: tf.as_ref(),
            student_gram_pairs: &student_pairs,
            teacher_gram_pairs: &teacher_pairs,
            student_logits: out.logits.as_ref(),
            teacher_logits: tl.as_ref(),
            labels: Some(labels),
        };
        let value = plan
            .loss
            .evaluate(&inputs)
            .map_err(|e| Error::Stage(format!("{}: {e}", self.label)))?;
        Ok((value, out.logits))
    }

    /// A batch's loss value, as a sum over its images (see `Reduction`).
    fn batch_sum(&self, value: f64, batch: usize) -> f64 {
        match self.plan.reduction {
            Reduction::Sum => value,
            Reduction::Mean | Reduction::Mixed => value * batch as f64,
        }
    }

    fn evaluate(&self, loader: &Loader, with_loss: bool) -> Result<EvalResult, Error> {
        let mut loss_sum = 0.0;
        let mut correct = 0u64;
        let mut n = 0usize;
        for batch in loader.iter(0) {
            let batch = batch?;
            let b = batch.indices.len();
            let logits = if with_loss {
                let (l, logits) = self.batch_loss(&batch.images, &batch.labels, Mode::Eval)?;
                let v = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                loss_sum += self.batch_sum(v, b);
                logits
            } else {
                Some(self.student.forward(&batch.images, Mode::Eval)?)
            };
            if let Some(logits) = logits {
                correct += count_correct(&logits, &batch.labels)?;
            }
            n += b;
        }
        let has_logits = !with_loss || self.plan.student_logits;
        Ok(EvalResult {
            loss: loss_sum / n.max(1) as f64,
            acc: has_logits.then(|| 100.0 * correct as f64 / n.max(1) as f64),
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
        let plan = self.plan;
        let accuracy_monitored = plan.monitor == Monitor::Accuracy;
        let mut optimizer = plan
            .optimizer
            .build(self.trainable_params()?)
            .map_err(|e| Error::Stage(format!("{}: {e}", self.label)))?;
        let mut schedule = plan
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
                loss_sum += self.batch_sum(v, b);
                if let (Some(l), true) = (logits, plan.labels) {
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
                acc: plan
                    .labels
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
            stage: plan.number,
            loss: plan.loss.describe(),
            epochs: epoch,
            best_epoch,
            best_metric,
            monitored: if accuracy_monitored {
                format!("{} accuracy", if separate_test { "val" } else { "test" })
            } else {
                format!(
                    "{} {} loss",
                    if separate_test { "val" } else { "test" },
                    plan.loss.name()
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
            stage: self.plan.number,
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
