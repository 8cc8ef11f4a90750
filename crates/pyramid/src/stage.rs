//! Runs one training stage (docs/method.md §8): initial evaluation, epochs of train + eval, the
//! schedule's save / cut / reload / stop decisions, and the final reload of the best weights.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Tensor, Var, D};
use indicatif::MultiProgress;
use pyramid_datasets::Loader;
use pyramid_losses::{LossInputs, LossSpec, Monitor, Reduction};
use pyramid_models::{Adapter, BlockKind, Mode, Model, Taps};
use pyramid_rng::Rng;
use pyramid_train::metrics::{EpochMetrics, EpochTiming};
use pyramid_train::optim::OptimizerState;
use pyramid_train::schedule::{Schedule, StopReason};
use serde::{Deserialize, Serialize};

use crate::method::TrainSet;
use crate::plan::StagePlan;
use crate::progress::Bar;
use crate::Error;

/// The data a stage sees.
pub struct StageData<'a> {
    /// The training images, shuffled and augmented per epoch.
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
    /// What the stage trains, with which loss, optimiser and schedule.
    pub plan: &'a StagePlan,
    /// The model being trained.
    pub student: &'a Model,
    /// The model it learns from, when the loss reads one.
    pub teacher: Option<&'a Model>,
    /// The FitNet regressor, when the plan's feature pair has one.
    pub adapter: Option<&'a Adapter>,
    /// Dropout and any other draw of the stage.
    pub rng: Rng,
    /// Where the stage draws its progress bars; `None`: no bars.
    pub progress: Option<&'a MultiProgress>,
    /// Where the stage continues from (the student already holds the snapshot's weights).
    pub resume: Option<StageSnapshot>,
    /// Set by a signal handler: the stage abandons its epoch and returns `Error::Interrupted`.
    pub interrupt: Option<&'a AtomicBool>,
    /// Chance-level accuracy (%) of the data, for a stage that should leave it at once (the
    /// teacher's): still at most 1.5× chance after the first epoch is logged as a warning.
    pub chance_accuracy: Option<f64>,
}

/// A stage's bookkeeping at the end of a completed epoch: with [`StageSnapshot`]'s tensors,
/// enough to continue it exactly. Draws need no state: every batch's generator is derived from
/// the stage, the epoch and the batch index, and the loader's order from the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageProgress {
    /// Completed epochs (0: the initial evaluation is done).
    pub epoch: u64,
    /// The schedule's state (learning rate, plateau counters).
    pub schedule: Schedule,
    /// Epoch of the selected weights (0 = the stage's starting weights).
    pub best_epoch: u64,
    /// Monitored metric of the selected weights.
    pub best_metric: f64,
    /// Test accuracy (%) of the selected weights.
    pub best_test_acc: Option<f64>,
    /// Test accuracy (%) after the last completed epoch.
    pub last_test_acc: Option<f64>,
    /// The monitored metric of the initial evaluation, and whether any epoch changed it.
    pub initial_metric: f64,
    /// Whether any epoch changed the monitored metric.
    pub metric_moved: bool,
    /// Training images processed so far.
    pub images_seen: usize,
    /// Seconds spent in training steps so far.
    pub train_seconds: f64,
    /// Seconds spent in the stage so far, evaluations included.
    pub seconds: f64,
}

/// [`StageProgress`] with the tensors it needs.
#[derive(Debug, Clone)]
pub struct StageSnapshot {
    /// The bookkeeping.
    pub progress: StageProgress,
    /// The optimiser's buffers and step counts.
    pub optimizer: OptimizerState,
    /// The selected weights; `None` when they are the current ones.
    pub best: Option<Vec<(String, Tensor)>>,
    /// The FitNet regressor's parameters.
    pub adapter: Vec<(String, Tensor)>,
}

/// What a stage reports at the end of every epoch (the initial evaluation is epoch 0).
pub struct EpochDone {
    /// Everything needed to continue after this epoch.
    pub snapshot: StageSnapshot,
    /// The epoch's losses and accuracies (`metrics.jsonl`).
    pub metrics: EpochMetrics,
    /// The epoch's wall-clock figures (`timings.jsonl`).
    pub timing: EpochTiming,
}

/// Receives every completed epoch before the stage logs it, so that an epoch reported as done
/// is one a resumed run never redoes.
pub trait EpochSink {
    /// Persists `done` (and the student's weights) before the stage logs the epoch.
    fn epoch_done(&mut self, student: &Model, done: EpochDone) -> Result<(), Error>;
}

/// What a stage produced. Accuracies in percent; hint losses per sample (Σ squared error / N).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageOutcome {
    /// 1 or 2 (the teacher's and Scratch's single stage count as 2).
    pub stage: u32,
    /// The loss, as `LossSpec::describe` names it.
    pub loss: String,
    /// Training epochs run (the initial evaluation is epoch 0).
    pub epochs: u64,
    /// Epoch of the selected weights (0 = the state the stage started from).
    pub best_epoch: u64,
    /// Monitored metric of the selected weights.
    pub best_metric: f64,
    /// `loss` (lower is better) or `accuracy` (higher is better).
    pub monitored: String,
    /// Test accuracy of the selected weights (for a hint stage: of the whole network after it).
    pub best_test_acc: Option<f64>,
    /// Test accuracy of the weights at the last epoch, before the best ones were reloaded.
    pub last_test_acc: Option<f64>,
    /// Why the stage ended (schedule's stop rule, epoch cap).
    pub stop: Option<StopReason>,
    /// Seconds of the stage.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_sec: f64,
    /// Signs that the stage did not learn (see `StageRun::run`); also logged as warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
                return Err(Error::Stage {
                    label: self.label.clone(),
                    message: "the plan's loss reads a teacher, but none was given".into(),
                })
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
        let value = plan.loss.evaluate(&inputs).map_err(|source| Error::Loss {
            label: self.label.clone(),
            source,
        })?;
        Ok((value, out.logits))
    }

    /// A batch's loss value, as a sum over its images (see `Reduction`).
    fn batch_sum(&self, value: f64, batch: usize) -> f64 {
        match self.plan.reduction {
            Reduction::Sum => value,
            Reduction::Mean | Reduction::Mixed => value * batch as f64,
        }
    }

    /// Loss and accuracy of a pass over `loader` (`what` names it on the progress bar).
    fn evaluate(&self, loader: &Loader, with_loss: bool, what: &str) -> Result<EvalResult, Error> {
        let bar = Bar::eval(self.progress, what, loader.num_batches() as u64);
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
            bar.inc();
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
        Ok(self.evaluate(test, false, "test")?.acc.unwrap_or(0.0))
    }

    fn interrupted(&self) -> Result<(), Error> {
        match self.interrupt {
            Some(flag) if flag.load(Ordering::SeqCst) => Err(Error::Interrupted),
            _ => Ok(()),
        }
    }

    fn adapter_tensors(&self) -> Vec<(String, Tensor)> {
        self.adapter
            .map(|a| {
                a.params()
                    .into_iter()
                    .map(|(n, v)| (n, v.as_tensor().clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Evaluates the selection set (and the test set when it is separate and accuracy is
    /// monitored); a non-finite loss is an error naming the epoch.
    fn evaluate_epoch(
        &self,
        data: &StageData,
        epoch: u64,
    ) -> Result<(EvalResult, Option<EvalResult>), Error> {
        let sel_name = if data.test.is_some() { "val" } else { "test" };
        let sel = self.evaluate(data.select, true, sel_name)?;
        let test = match data.test {
            Some(t) if self.plan.monitor == Monitor::Accuracy => {
                Some(self.evaluate(t, true, "test")?)
            }
            _ => None,
        };
        for (what, r) in [("selection", Some(&sel)), ("test", test.as_ref())] {
            if let Some(r) = r.filter(|r| !r.loss.is_finite()) {
                return Err(Error::Stage {
                    label: self.label.clone(),
                    message: format!(
                        "the {what} loss is {} after epoch {epoch}; lower the learning rate",
                        r.loss
                    ),
                });
            }
        }
        Ok((sel, test))
    }

    /// Runs the stage to its stop rule (or continues it from `resume`) and leaves the student
    /// at its selected weights. Every completed epoch goes to `sink` before it is logged.
    pub fn run(self, data: &StageData, sink: &mut dyn EpochSink) -> Result<StageOutcome, Error> {
        let started = Instant::now();
        let plan = self.plan;
        let accuracy_monitored = plan.monitor == Monitor::Accuracy;
        let mut optimizer = plan
            .optimizer
            .build(self.trainable_params()?)
            .map_err(|source| Error::Optimizer {
                label: self.label.clone(),
                source,
            })?;
        let monitored = |r: &EvalResult| {
            if accuracy_monitored {
                r.acc.unwrap_or(0.0)
            } else {
                r.loss
            }
        };
        let separate_test = data.test.is_some();
        let sel_name = if separate_test { "val" } else { "test" };

        let done = self.resume.as_ref().map_or(0, |r| r.progress.epoch);
        let stage_bar = Bar::stage(self.progress, &self.label, &plan.schedule, done);
        let (mut p, mut best) = match &self.resume {
            Some(r) => {
                optimizer
                    .load_state(&r.optimizer)
                    .map_err(|source| Error::Optimizer {
                        label: format!("{} (resume state)", self.label),
                        source,
                    })?;
                if let Some(a) = self.adapter {
                    for ((name, var), (saved, t)) in a.params().iter().zip(&r.adapter) {
                        if name != saved {
                            return Err(Error::Stage {
                                label: self.label.clone(),
                                message: format!(
                                    "resume state has regressor `{saved}` where `{name}` was expected"
                                ),
                            });
                        }
                        var.set(t)?;
                    }
                }
                let best = match &r.best {
                    Some(b) => b.clone(),
                    None => self.student.snapshot(),
                };
                tracing::info!(
                    "{}: resuming after epoch {} (epochs 0–{} are done and not redone)",
                    self.label,
                    r.progress.epoch,
                    r.progress.epoch
                );
                (r.progress.clone(), best)
            }
            None => {
                // Epoch 0: the starting state is a candidate (§8.2 step 2, §8.3 step 2).
                let mut schedule =
                    plan.schedule
                        .build(optimizer.lrs())
                        .map_err(|source| Error::Optimizer {
                            label: self.label.clone(),
                            source,
                        })?;
                let t0 = Instant::now();
                let (sel, test0) = self.evaluate_epoch(data, 0)?;
                let metric = monitored(&sel);
                schedule.initial(metric)?;
                let test_acc = test0.as_ref().map_or(sel.acc, |t| t.acc);
                let p = StageProgress {
                    epoch: 0,
                    schedule,
                    best_epoch: 0,
                    best_metric: metric,
                    best_test_acc: test_acc,
                    last_test_acc: test_acc,
                    initial_metric: metric,
                    metric_moved: false,
                    images_seen: 0,
                    train_seconds: 0.0,
                    seconds: t0.elapsed().as_secs_f64(),
                };
                let done = EpochDone {
                    metrics: self.record(
                        0,
                        None,
                        &sel,
                        test0.as_ref(),
                        optimizer.lr(0),
                        true,
                        false,
                    ),
                    timing: self.timing(0, t0.elapsed().as_secs_f64(), 0.0),
                    snapshot: StageSnapshot {
                        progress: p.clone(),
                        optimizer: optimizer.state()?,
                        best: None,
                        adapter: self.adapter_tensors(),
                    },
                };
                sink.epoch_done(self.student, done)?;
                tracing::info!(
                    "{}: start {} = {:.4}",
                    self.label,
                    if accuracy_monitored { "acc" } else { "loss" },
                    metric
                );
                (p, self.student.snapshot())
            }
        };
        let resumed_seconds = if self.resume.is_some() {
            p.seconds
        } else {
            0.0
        };
        // The fused training steps (models/src/fused.rs) serve a student without Gram pairs or
        // a regressor, where its device and backend allow them: plain cross-entropy on the
        // labels, and the hint stage (MSE_sum at a tap) with a teacher on the fused path too.
        let fusable =
            plan.gram_pairs.is_empty() && self.adapter.is_none() && self.student.fused_available();
        let fused = fusable && plan.loss == LossSpec::CrossEntropy && plan.features.is_none();
        let fused_hint = fusable
            && plan.loss == LossSpec::Hint
            && plan.features.is_some()
            && self.teacher.is_some_and(|t| t.fused_available());
        while p.schedule.stopped().is_none() {
            let epoch = p.epoch + 1;
            let te = Instant::now();
            let lr = optimizer.lr(0);
            let bar = Bar::epoch(self.progress, epoch, data.train.num_batches() as u64);
            let (mut loss_sum, mut correct, mut n) = (0.0, 0u64, 0usize);
            for batch in data.train.iter(epoch) {
                self.interrupted()?;
                let batch = batch?;
                pyramid_fsio::fault_point(&format!(
                    "batch {} epoch {epoch} batch {}",
                    self.label, batch.index
                ));
                let b = batch.indices.len();
                let mut rng = self
                    .rng
                    .derive(&format!("epoch{epoch}/batch{}", batch.index));
                let (v, logits, grads) = if fused {
                    let s = self
                        .student
                        .train_step_ce(&batch.images, &batch.labels, &mut rng)?;
                    (s.loss, Some(s.logits), s.grads)
                } else if let (Some(f), Some(teacher), true) =
                    (&plan.features, self.teacher, fused_hint)
                {
                    let taps = Taps::until(std::slice::from_ref(&f.teacher));
                    let t = teacher.forward_taps(&batch.images, Mode::Eval, &taps)?;
                    let s = self.student.train_step_hint(
                        &batch.images,
                        &f.student,
                        t.tap(&f.teacher)?,
                        &mut rng,
                    )?;
                    (s.loss, None, s.grads)
                } else {
                    let (loss, logits) =
                        self.batch_loss(&batch.images, &batch.labels, Mode::Train(&mut rng))?;
                    let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    (v, logits, loss.backward()?)
                };
                if !v.is_finite() {
                    return Err(Error::Stage {
                        label: self.label.clone(),
                        message: format!(
                            "loss became {v} at epoch {epoch}, batch {}; lower the learning rate",
                            batch.index
                        ),
                    });
                }
                optimizer.step(&grads)?;
                loss_sum += self.batch_sum(v, b);
                if let (Some(l), true) = (logits, plan.labels) {
                    correct += count_correct(&l, &batch.labels)?;
                }
                n += b;
                bar.train_step(
                    loss_sum / n as f64,
                    plan.labels.then(|| 100.0 * correct as f64 / n as f64),
                    n as f64 / te.elapsed().as_secs_f64().max(1e-9),
                );
            }
            drop(bar);
            self.interrupted()?;
            let train_secs = te.elapsed().as_secs_f64();
            let (sel, test) = self.evaluate_epoch(data, epoch)?;
            let metric = monitored(&sel);
            let test_acc = test.as_ref().map_or(sel.acc, |t| t.acc);
            let d = p.schedule.step(metric)?;
            if d.improved {
                best = self.student.snapshot();
                p.best_epoch = epoch;
                p.best_metric = metric;
                p.best_test_acc = test_acc;
            }
            p.last_test_acc = test_acc;
            p.metric_moved |= metric != p.initial_metric;
            optimizer.set_lrs(&d.lrs)?;
            if d.reload_best {
                self.student.restore(&best)?;
            }
            p.epoch = epoch;
            stage_bar.set_position(epoch);
            p.images_seen += n;
            p.train_seconds += train_secs;
            p.seconds = resumed_seconds + started.elapsed().as_secs_f64();
            let train = EvalResult {
                loss: loss_sum / n.max(1) as f64,
                acc: plan
                    .labels
                    .then(|| 100.0 * correct as f64 / n.max(1) as f64),
                n,
            };
            let best_is_current = d.improved || d.reload_best;
            sink.epoch_done(
                self.student,
                EpochDone {
                    metrics: self.record(
                        epoch,
                        Some(&train),
                        &sel,
                        test.as_ref(),
                        lr,
                        d.improved,
                        d.cut,
                    ),
                    timing: self.timing(epoch, te.elapsed().as_secs_f64(), n as f64 / train_secs),
                    snapshot: StageSnapshot {
                        progress: p.clone(),
                        optimizer: optimizer.state()?,
                        best: (!best_is_current).then(|| best.clone()),
                        adapter: self.adapter_tensors(),
                    },
                },
            )?;
            if let (1, Some(chance), Some(acc)) = (epoch, self.chance_accuracy, test_acc) {
                if acc <= 1.5 * chance {
                    tracing::warn!(
                        "{}: accuracy {acc:.2}% after the first epoch is at chance level ({chance:.2}%): check the learning rate and the init ([model] init = \"kaiming\" for a narrow model without batch norm)",
                        self.label
                    );
                }
            }
            tracing::info!(
                "{}: epoch {epoch} train loss {:.4}{} | {sel_name} {:.4}{}{}{} | lr {:.1e} | {:.1}s",
                self.label,
                train.loss,
                train
                    .acc
                    .map(|a| format!(" acc {a:.2}"))
                    .unwrap_or_default(),
                sel.loss,
                sel.acc.map(|a| format!(" acc {a:.2}")).unwrap_or_default(),
                if d.improved { " *" } else { "" },
                if d.cut { " (lr cut)" } else { "" },
                lr,
                te.elapsed().as_secs_f64()
            );
        }
        drop(stage_bar);
        // Reload the selected weights (§8.2 step 8, §8.3 step 7).
        self.student.restore(&best)?;
        let (mut best_test_acc, mut last_test_acc) = (p.best_test_acc, p.last_test_acc);
        if !accuracy_monitored {
            // Bookkeeping of §8.2 step 8: the whole network's accuracy after the hint stage.
            let acc = self.test_accuracy(data)?;
            best_test_acc = Some(acc);
            last_test_acc = None;
        }
        let mut warnings = Vec::new();
        if p.epoch > 0 && !p.metric_moved {
            warnings.push(format!(
                "the monitored {sel_name} {} stayed at its initial value {} for all {} epochs: the stage did not learn",
                if accuracy_monitored { "accuracy" } else { "loss" },
                p.initial_metric,
                p.epoch
            ));
        }
        for w in &warnings {
            tracing::warn!("{}: {w}", self.label);
        }
        Ok(StageOutcome {
            stage: plan.number,
            loss: plan.loss.describe(),
            epochs: p.epoch,
            best_epoch: p.best_epoch,
            best_metric: p.best_metric,
            monitored: if accuracy_monitored {
                format!("{sel_name} accuracy")
            } else {
                format!("{sel_name} {} loss", plan.loss.name())
            },
            best_test_acc,
            last_test_acc,
            stop: p.schedule.stopped().cloned(),
            seconds: resumed_seconds + started.elapsed().as_secs_f64(),
            images_per_sec: p.images_seen as f64 / p.train_seconds.max(1e-9),
            warnings,
        })
    }

    fn timing(&self, epoch: u64, seconds: f64, images_per_sec: f64) -> EpochTiming {
        EpochTiming {
            stage: self.plan.number,
            epoch,
            seconds,
            images_per_sec,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        epoch: u64,
        train: Option<&EvalResult>,
        sel: &EvalResult,
        test: Option<&EvalResult>,
        lr: f64,
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
            improved,
            cut,
        }
    }
}

/// A sink that only logs the metrics (a stage run outside a run directory: nothing to resume).
impl EpochSink for pyramid_train::metrics::JsonlWriter {
    fn epoch_done(&mut self, _student: &Model, done: EpochDone) -> Result<(), Error> {
        Ok(self.append(&done.metrics)?)
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
        let l = pyramid_losses::cross_entropy(&logits, &batch.labels).map_err(|source| {
            Error::Loss {
                label: "evaluation".into(),
                source,
            }
        })?;
        loss += l.to_dtype(DType::F64)?.to_scalar::<f64>()? * b as f64;
        correct += count_correct(&logits, &batch.labels)?;
        n += b;
    }
    Ok((
        loss / n.max(1) as f64,
        100.0 * correct as f64 / n.max(1) as f64,
    ))
}
