//! Learning-rate schedules as pure, serialisable state machines.
//!
//! `Plateau` reproduces the ORIGINAL training loops of docs/method.md §8.2–§8.4: PyTorch 0.2's
//! ReduceLROnPlateau plus the loop's checkpoint / reload / stop rules. The caller evaluates,
//! feeds the monitored metric, and acts on the returned `Decision` (save, reload, set lrs, stop).

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Whether the monitored metric should go down (loss, stage 1) or up (accuracy, stage 2).
/// There is deliberately no default: a stage derives the mode from its loss
/// ([`ScheduleConfig::with_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

impl Mode {
    /// `"min"` or `"max"`, as written in a config.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Min => "min",
            Mode::Max => "max",
        }
    }

    /// What a metric monitored in this mode is, for error messages.
    fn meaning(self) -> &'static str {
        match self {
            Mode::Min => "a loss, which should fall; \"max\" is for accuracy",
            Mode::Max => "accuracy, which should rise; \"min\" is for a loss",
        }
    }
}

/// The mode a runtime schedule uses: an unresolved (`None`) mode is an error, never a default.
fn resolved(mode: Option<Mode>) -> Result<Mode> {
    mode.ok_or_else(|| {
        TrainError::Config("schedule: mode not resolved; call with_mode first".into())
    })
}

/// PyTorch `threshold_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    /// min: a < best·(1 − th); max: a > best·(1 + th). With th = 1e-20 this is strict in f64.
    #[default]
    Rel,
    /// min: a < best − th; max: a > best + th.
    Abs,
}

/// When a stage ends (docs/method.md §8.2 step 7, §8.3 step 6, §8.4). "lr" is the learning rate after
/// this epoch's scheduler step; with several groups, the stop needs every group below the bound
/// (one group in the original, where both readings agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopRule {
    /// `Train_stage1`: check_load == 2 or lr < 1e-7.
    Stage1,
    /// `Train_stage2`: lr < 1e-8, or check_load ≥ 2 after at least one improvement in the stage.
    Stage2,
    /// `Train.py`: lr < 1e-8 or check_load == 2.
    SingleStage,
    /// Only `max_epochs` ends the stage.
    Never,
}

/// Which test decides "improved" (checkpoint saved, check_load reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaveTest {
    /// Strict `<` / `>` against the best saved value (`Train_stage1/2`, docs/method.md §8.2–8.3).
    #[default]
    Strict,
    /// The scheduler's own threshold test (`Train.py`, §8.4: acc > best·1.0001).
    Scheduler,
}

fn d_factor() -> f64 {
    0.1
}
fn d_patience() -> u64 {
    5
}
fn d_threshold() -> f64 {
    1e-20
}
fn d_eps() -> f64 {
    1e-8
}

/// ReduceLROnPlateau + loop rules. `stop` is required in config and `mode` is normally derived
/// by the stage ([`ScheduleConfig::with_mode`]); the rest default to the two-stage scripts
/// (docs/method.md §9.1): factor 0.1, patience 5, threshold 1e-20 rel, eps 1e-8 (stage 2 uses 1e-9),
/// cooldown 0, min_lr 0, strict save test, no epoch cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlateauConfig {
    /// Whether the monitored metric should fall (`min`) or rise (`max`). Normally left out: the
    /// stage derives it from its loss; an explicit value must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// When the stage ends (required: there is no neutral choice).
    pub stop: StopRule,
    /// Multiplier of the learning rate at a cut, in (0, 1).
    #[serde(default = "d_factor")]
    pub factor: f64,
    /// Epochs without improvement tolerated before a cut (PyTorch: a cut when the count
    /// exceeds it).
    #[serde(default = "d_patience")]
    pub patience: u64,
    /// Minimum change that counts as an improvement for the scheduler, read per `threshold_mode`.
    #[serde(default = "d_threshold")]
    pub threshold: f64,
    /// Whether `threshold` is relative or absolute.
    #[serde(default)]
    pub threshold_mode: ThresholdMode,
    /// A cut whose size old − new is not > eps is ignored (PyTorch semantics).
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Epochs after a cut during which bad epochs are not counted.
    #[serde(default)]
    pub cooldown: u64,
    /// Lower bound of every group's learning rate.
    #[serde(default)]
    pub min_lr: f64,
    /// Which test decides that a checkpoint is saved.
    #[serde(default)]
    pub save_test: SaveTest,
    /// Optional epoch cap (docs/method.md §13 B6); `None` = unlimited, as in the original.
    #[serde(default)]
    pub max_epochs: Option<u64>,
}

impl PlateauConfig {
    fn base(mode: Mode, stop: StopRule, eps: f64) -> Self {
        Self {
            mode: Some(mode),
            stop,
            factor: d_factor(),
            patience: d_patience(),
            threshold: d_threshold(),
            threshold_mode: ThresholdMode::Rel,
            eps,
            cooldown: 0,
            min_lr: 0.0,
            save_test: SaveTest::Strict,
            max_epochs: None,
        }
    }

    /// Stage 1 (§8.2): min test loss, eps 1e-8, threshold 1e-20 rel, stop rule `Stage1`.
    pub fn stage1() -> Self {
        Self::base(Mode::Min, StopRule::Stage1, 1e-8)
    }

    /// Stage 2 (§8.3): max test accuracy, eps 1e-9, threshold 1e-20 rel, stop rule `Stage2`.
    pub fn stage2() -> Self {
        Self::base(Mode::Max, StopRule::Stage2, 1e-9)
    }

    /// Single stage `Train.py` (§8.4): max, eps 1e-9, threshold 1e-4 rel used for saving too.
    pub fn single_stage() -> Self {
        Self {
            threshold: 1e-4,
            save_test: SaveTest::Scheduler,
            ..Self::base(Mode::Max, StopRule::SingleStage, 1e-9)
        }
    }

    /// Stage 2 of the Gram-Direct scripts (§9.2): as `stage2` but the scheduler keeps
    /// PyTorch's default threshold 1e-4 rel while the save test stays strict.
    pub fn gram_direct_stage2() -> Self {
        Self {
            threshold: 1e-4,
            ..Self::stage2()
        }
    }

    /// Checks the numeric settings (not `mode`, which is resolved later by the stage).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(format!("plateau: {m}")));
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return bad(format!("factor must be in (0, 1), got {}", self.factor));
        }
        for (what, x) in [
            ("threshold", self.threshold),
            ("eps", self.eps),
            ("min_lr", self.min_lr),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                return bad(format!("{what} must be finite and >= 0, got {x}"));
            }
        }
        if self.max_epochs == Some(0) {
            return bad("max_epochs must be > 0, got 0".into());
        }
        Ok(())
    }
}

/// Why a stage stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StopReason {
    /// The learning rate fell below `bound`.
    LrBelow {
        /// The learning rate after the epoch's cut (the largest over the groups).
        lr: f64,
        /// The rule's bound (1e-7 or 1e-8).
        bound: f64,
    },
    /// check_load reached the rule's limit (fruitless cuts).
    FruitlessCuts {
        /// Cuts without an improvement since the last improvement.
        check_load: u32,
    },
    /// The optional epoch cap.
    MaxEpochs {
        /// Completed training epochs when the stage stopped.
        epochs: u64,
    },
}

/// What the caller must do after feeding one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Completed training epochs (0 for the initial evaluation).
    pub epoch: u64,
    /// Save a checkpoint of the current weights (always true for the initial evaluation).
    pub improved: bool,
    /// The learning rate was reduced this epoch.
    pub cut: bool,
    /// Learning rates (per group) to use from now on.
    pub lrs: Vec<f64>,
    /// Reload the best checkpoint's weights (a cut without improvement, §8.2 step 6). The
    /// optimiser state is kept (§13 B18).
    pub reload_best: bool,
    /// End the stage (then reload the best checkpoint, §8.2 step 8 / §8.3 step 7).
    pub stop: Option<StopReason>,
}

fn is_better(mode: Mode, tmode: ThresholdMode, threshold: f64, a: f64, best: Option<f64>) -> bool {
    let Some(best) = best else {
        // PyTorch starts from ±inf: anything but NaN is better.
        return !a.is_nan();
    };
    match (mode, tmode) {
        (Mode::Min, ThresholdMode::Rel) => a < best * (1.0 - threshold),
        (Mode::Max, ThresholdMode::Rel) => a > best * (threshold + 1.0),
        (Mode::Min, ThresholdMode::Abs) => a < best - threshold,
        (Mode::Max, ThresholdMode::Abs) => a > best + threshold,
    }
}

/// ReduceLROnPlateau with the original loop's save / reload / stop rules (docs/method.md §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    config: PlateauConfig,
    lrs: Vec<f64>,
    /// Scheduler's best (PyTorch `best`); `None` before the initial evaluation.
    best: Option<f64>,
    /// Best value of a saved checkpoint (the loop's own best).
    best_saved: Option<f64>,
    num_bad_epochs: u64,
    cooldown_counter: u64,
    check_load: u32,
    /// Improvements during the stage, not counting the initial evaluation (`first_save`).
    improvements: u64,
    cuts: u32,
    epoch: u64,
    started: bool,
    stopped: Option<StopReason>,
}

impl Plateau {
    /// `lrs`: the optimiser's initial learning rate per group. `config.mode` must be resolved
    /// (see [`ScheduleConfig::with_mode`]).
    pub fn new(config: PlateauConfig, lrs: Vec<f64>) -> Result<Self> {
        config.validate()?;
        resolved(config.mode)?;
        if lrs.is_empty() {
            return Err(TrainError::Config("plateau: no learning rates".into()));
        }
        Ok(Self {
            config,
            lrs,
            best: None,
            best_saved: None,
            num_bad_epochs: 0,
            cooldown_counter: 0,
            check_load: 0,
            improvements: 0,
            cuts: 0,
            epoch: 0,
            started: false,
            stopped: None,
        })
    }

    /// The configuration, with its mode resolved.
    pub fn config(&self) -> &PlateauConfig {
        &self.config
    }
    /// The resolved mode (set by `new`; an error only for a state deserialised without one).
    pub fn mode(&self) -> Result<Mode> {
        resolved(self.config.mode)
    }
    /// Current per-group learning rates.
    pub fn lrs(&self) -> &[f64] {
        &self.lrs
    }
    /// Best value of a saved checkpoint (the loop's best).
    pub fn best_saved(&self) -> Option<f64> {
        self.best_saved
    }
    /// The scheduler's own best (differs from `best_saved` only with a non-strict threshold).
    pub fn scheduler_best(&self) -> Option<f64> {
        self.best
    }
    /// Completed training epochs (0 after the initial evaluation).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// Cuts without an improvement since the last improvement (the original loop's `check_load`).
    pub fn check_load(&self) -> u32 {
        self.check_load
    }
    /// Evaluations since the scheduler's best, as in PyTorch (reset by a cut and during cooldown).
    pub fn num_bad_epochs(&self) -> u64 {
        self.num_bad_epochs
    }
    /// Improvements of the saved best during the stage, not counting the initial evaluation.
    pub fn improvements(&self) -> u64 {
        self.improvements
    }
    /// Applied learning-rate cuts so far.
    pub fn cuts(&self) -> u32 {
        self.cuts
    }
    /// Why the stage stopped; `None` while it runs.
    pub fn stopped(&self) -> Option<&StopReason> {
        self.stopped.as_ref()
    }

    /// The evaluation before the first epoch (§8.2 step 2, §8.3 step 2): `scheduler.step(L0)`
    /// sets the best; the caller saves a checkpoint (the initial state is a candidate).
    pub fn initial(&mut self, metric: f64) -> Result<Decision> {
        if self.started {
            return Err(TrainError::StateMismatch(
                "plateau: initial() called twice".into(),
            ));
        }
        let mode = self.mode()?;
        self.started = true;
        self.best_saved = Some(metric);
        self.scheduler_step(mode, metric);
        let stop = self.cap_reached();
        self.stopped = stop.clone();
        Ok(Decision {
            epoch: 0,
            improved: true,
            cut: false,
            lrs: self.lrs.clone(),
            reload_best: false,
            stop,
        })
    }

    /// One epoch's evaluation of the monitored metric, in the original loop's order:
    /// save test → scheduler step (cut) → reload rule → stop rule.
    pub fn step(&mut self, metric: f64) -> Result<Decision> {
        if !self.started {
            return Err(TrainError::StateMismatch(
                "plateau: step() before initial()".into(),
            ));
        }
        if self.stopped.is_some() {
            return Err(TrainError::StateMismatch(
                "plateau: step() after stop".into(),
            ));
        }
        let mode = self.mode()?;
        self.epoch += 1;
        let c = &self.config;
        let improved = match c.save_test {
            SaveTest::Strict => is_better(mode, ThresholdMode::Abs, 0.0, metric, self.best_saved),
            SaveTest::Scheduler => {
                is_better(mode, c.threshold_mode, c.threshold, metric, self.best_saved)
            }
        };
        if improved {
            self.best_saved = Some(metric);
            self.check_load = 0;
            self.improvements += 1;
        }
        let cut = self.scheduler_step(mode, metric);
        let reload_best = cut && !improved;
        if reload_best {
            self.check_load += 1;
        }
        let stop = self.stop_rule().or_else(|| self.cap_reached());
        self.stopped = stop.clone();
        Ok(Decision {
            epoch: self.epoch,
            improved,
            cut,
            lrs: self.lrs.clone(),
            reload_best,
            stop,
        })
    }

    /// PyTorch 0.2 `ReduceLROnPlateau.step`; returns whether any group's lr changed.
    fn scheduler_step(&mut self, mode: Mode, metric: f64) -> bool {
        let c = &self.config;
        if is_better(mode, c.threshold_mode, c.threshold, metric, self.best) {
            self.best = Some(metric);
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        let mut cut = false;
        if self.num_bad_epochs > c.patience {
            for lr in &mut self.lrs {
                let new = (*lr * c.factor).max(c.min_lr);
                if *lr - new > c.eps {
                    *lr = new;
                    cut = true;
                }
            }
            self.cooldown_counter = c.cooldown;
            self.num_bad_epochs = 0;
        }
        if cut {
            self.cuts += 1;
        }
        cut
    }

    fn lr_below(&self, bound: f64) -> Option<StopReason> {
        let lr = self.lrs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lr < bound).then_some(StopReason::LrBelow { lr, bound })
    }

    fn stop_rule(&self) -> Option<StopReason> {
        let fruitless = StopReason::FruitlessCuts {
            check_load: self.check_load,
        };
        match self.config.stop {
            StopRule::Stage1 => {
                if self.check_load >= 2 {
                    Some(fruitless)
                } else {
                    self.lr_below(1e-7)
                }
            }
            StopRule::Stage2 => self
                .lr_below(1e-8)
                .or_else(|| (self.check_load >= 2 && self.improvements >= 1).then_some(fruitless)),
            StopRule::SingleStage => self
                .lr_below(1e-8)
                .or_else(|| (self.check_load >= 2).then_some(fruitless)),
            StopRule::Never => None,
        }
    }

    fn cap_reached(&self) -> Option<StopReason> {
        match self.config.max_epochs {
            Some(m) if self.epoch >= m => Some(StopReason::MaxEpochs { epochs: self.epoch }),
            _ => None,
        }
    }
}

// ------------------------------------------------------------------------ fixed schedules
//
// Fixed schedules depend only on the completed-epoch count (PyTorch closed forms). They still
// report `improved` (strict, in `mode`) so the caller can keep the best checkpoint, and stop
// after `max_epochs`.

/// PyTorch `StepLR`: lr = base · γ^⌊epoch / step_size⌋.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepLr {
    /// Epochs between two multiplications by `gamma`; > 0.
    pub step_size: u64,
    /// Multiplier of the learning rate every `step_size` epochs; > 0 (default 0.1).
    #[serde(default = "d_factor")]
    pub gamma: f64,
    /// Whether the monitored metric should fall (`min`) or rise (`max`). Normally left out: the
    /// stage derives it from its loss; an explicit value must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The stage ends after this many epochs; > 0.
    pub max_epochs: u64,
}

/// PyTorch `MultiStepLR`: lr = base · γ^(number of milestones ≤ epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiStep {
    /// Epochs (strictly increasing) at which the learning rate is multiplied by `gamma`.
    pub milestones: Vec<u64>,
    /// Multiplier at each milestone; > 0 (default 0.1).
    #[serde(default = "d_factor")]
    pub gamma: f64,
    /// Whether the monitored metric should fall (`min`) or rise (`max`). Normally left out: the
    /// stage derives it from its loss; an explicit value must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The stage ends after this many epochs; > 0.
    pub max_epochs: u64,
}

/// PyTorch `CosineAnnealingLR` closed form:
/// lr = η_min + (base − η_min)·(1 + cos(π·epoch / T_max)) / 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cosine {
    /// Epochs of the half cosine period; > 0.
    pub t_max: u64,
    /// Final learning rate, ≥ 0 (default 0).
    #[serde(default)]
    pub eta_min: f64,
    /// Whether the monitored metric should fall (`min`) or rise (`max`). Normally left out: the
    /// stage derives it from its loss; an explicit value must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The stage ends after this many epochs; > 0.
    pub max_epochs: u64,
}

/// Constant learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constant {
    /// Whether the monitored metric should fall (`min`) or rise (`max`). Normally left out: the
    /// stage derives it from its loss; an explicit value must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The stage ends after this many epochs; > 0.
    pub max_epochs: u64,
}

/// Any schedule, e.g. `{"kind": "plateau", "stop": "stage2", "eps": 1e-9}` or
/// `{"kind": "cosine", "t_max": 200, "max_epochs": 200}`. `mode` is normally left out and
/// filled in by the stage from its loss ([`ScheduleConfig::with_mode`]) before `build`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleConfig {
    /// ReduceLROnPlateau with the original loop's rules.
    Plateau(PlateauConfig),
    /// `StepLR`.
    Step(StepLr),
    /// `MultiStepLR`.
    MultiStep(MultiStep),
    /// `CosineAnnealingLR`.
    Cosine(Cosine),
    /// A constant learning rate.
    Constant(Constant),
}

impl ScheduleConfig {
    /// The lr after `epoch` completed epochs for fixed schedules; `None` for `Plateau`.
    pub fn fixed_lr(&self, base: f64, epoch: u64) -> Option<f64> {
        Some(match self {
            ScheduleConfig::Plateau(_) => return None,
            ScheduleConfig::Step(s) => base * s.gamma.powi((epoch / s.step_size.max(1)) as i32),
            ScheduleConfig::MultiStep(s) => {
                let n = s.milestones.iter().filter(|m| **m <= epoch).count();
                base * s.gamma.powi(n as i32)
            }
            ScheduleConfig::Cosine(s) => {
                let x = std::f64::consts::PI * epoch as f64 / s.t_max.max(1) as f64;
                s.eta_min + (base - s.eta_min) * (1.0 + x.cos()) / 2.0
            }
            ScheduleConfig::Constant(_) => base,
        })
    }

    /// The explicit or resolved mode; `None` when it is still to be derived from the loss.
    pub fn mode(&self) -> Option<Mode> {
        match self {
            ScheduleConfig::Plateau(c) => c.mode,
            ScheduleConfig::Step(c) => c.mode,
            ScheduleConfig::MultiStep(c) => c.mode,
            ScheduleConfig::Cosine(c) => c.mode,
            ScheduleConfig::Constant(c) => c.mode,
        }
    }

    fn mode_mut(&mut self) -> &mut Option<Mode> {
        match self {
            ScheduleConfig::Plateau(c) => &mut c.mode,
            ScheduleConfig::Step(c) => &mut c.mode,
            ScheduleConfig::MultiStep(c) => &mut c.mode,
            ScheduleConfig::Cosine(c) => &mut c.mode,
            ScheduleConfig::Constant(c) => &mut c.mode,
        }
    }

    /// A copy with the mode set to `wanted` (the mode the stage's loss is monitored by). An
    /// explicit mode that disagrees is an error; an absent or agreeing one is fine.
    pub fn with_mode(&self, wanted: Mode) -> Result<ScheduleConfig> {
        if let Some(m) = self.mode() {
            if m != wanted {
                return Err(TrainError::Config(format!(
                    "schedule mode = \"{}\" contradicts the loss, which is monitored by {} ({}); leave `mode` out",
                    m.as_str(),
                    wanted.as_str(),
                    wanted.meaning(),
                )));
            }
        }
        let mut out = self.clone();
        *out.mode_mut() = Some(wanted);
        Ok(out)
    }

    /// Checks every kind's settings (not `mode`, which may still be unresolved): the plateau
    /// rules of [`PlateauConfig::validate`]; step_size, t_max and max_epochs > 0; gamma finite
    /// and > 0; eta_min finite and >= 0; milestones strictly increasing.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(format!("schedule: {m}")));
        let gamma_ok = |gamma: f64| {
            if gamma.is_finite() && gamma > 0.0 {
                Ok(())
            } else {
                bad(format!("gamma must be finite and > 0, got {gamma}"))
            }
        };
        match self {
            ScheduleConfig::Plateau(c) => return c.validate(),
            ScheduleConfig::Step(c) => {
                if c.step_size == 0 {
                    return bad("step_size must be > 0, got 0".into());
                }
                gamma_ok(c.gamma)?;
            }
            ScheduleConfig::MultiStep(c) => {
                if let Some(w) = c.milestones.windows(2).find(|w| w[0] >= w[1]) {
                    return bad(format!(
                        "milestones must be strictly increasing, got {:?} ({} then {})",
                        c.milestones, w[0], w[1]
                    ));
                }
                gamma_ok(c.gamma)?;
            }
            ScheduleConfig::Cosine(c) => {
                if c.t_max == 0 {
                    return bad("t_max must be > 0, got 0".into());
                }
                if !(c.eta_min.is_finite() && c.eta_min >= 0.0) {
                    return bad(format!(
                        "eta_min must be finite and >= 0, got {}",
                        c.eta_min
                    ));
                }
            }
            ScheduleConfig::Constant(_) => {}
        }
        if self.max_epochs() == Some(0) {
            return bad("max_epochs must be > 0, got 0".into());
        }
        Ok(())
    }

    /// A short description, e.g. `plateau (stage1 stop), at most 4 epochs`.
    pub fn describe(&self) -> String {
        let kind = match self {
            ScheduleConfig::Plateau(c) => format!(
                "plateau ({} stop)",
                serde_json::to_value(c.stop)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            ),
            ScheduleConfig::Step(_) => "step".into(),
            ScheduleConfig::MultiStep(_) => "multi_step".into(),
            ScheduleConfig::Cosine(_) => "cosine".into(),
            ScheduleConfig::Constant(_) => "constant".into(),
        };
        match self.max_epochs() {
            Some(n) => format!("{kind}, at most {n} epochs"),
            None => kind,
        }
    }

    /// The epoch cap: always set for fixed schedules, optional for `plateau`.
    pub fn max_epochs(&self) -> Option<u64> {
        match self {
            ScheduleConfig::Plateau(c) => c.max_epochs,
            ScheduleConfig::Step(c) => Some(c.max_epochs),
            ScheduleConfig::MultiStep(c) => Some(c.max_epochs),
            ScheduleConfig::Cosine(c) => Some(c.max_epochs),
            ScheduleConfig::Constant(c) => Some(c.max_epochs),
        }
    }

    /// Builds the runtime schedule from the optimiser's initial per-group learning rates. The
    /// config must be valid and its mode resolved ([`ScheduleConfig::with_mode`]).
    pub fn build(&self, lrs: Vec<f64>) -> Result<Schedule> {
        Ok(match self {
            ScheduleConfig::Plateau(c) => Schedule::Plateau(Plateau::new(c.clone(), lrs)?),
            other => Schedule::Fixed(Fixed::new(other.clone(), lrs)?),
        })
    }
}

/// Runtime state of a fixed (epoch-driven) schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fixed {
    config: ScheduleConfig,
    base_lrs: Vec<f64>,
    lrs: Vec<f64>,
    best: Option<f64>,
    epoch: u64,
    started: bool,
    stopped: Option<StopReason>,
}

impl Fixed {
    /// `config` must be a fixed (non-plateau) kind, valid, with its mode resolved.
    pub fn new(config: ScheduleConfig, base_lrs: Vec<f64>) -> Result<Self> {
        let bad = |m: &str| Err(TrainError::Config(format!("schedule: {m}")));
        if base_lrs.is_empty() {
            return bad("no learning rates");
        }
        if let ScheduleConfig::Plateau(_) = config {
            return bad("Fixed::new given a plateau config");
        }
        config.validate()?;
        resolved(config.mode())?;
        Ok(Self {
            config,
            lrs: base_lrs.clone(),
            base_lrs,
            best: None,
            epoch: 0,
            started: false,
            stopped: None,
        })
    }

    /// The resolved mode (set by `new`; an error only for a state deserialised without one).
    pub fn mode(&self) -> Result<Mode> {
        resolved(self.config.mode())
    }

    fn decide(&mut self, mode: Mode, metric: f64) -> Decision {
        let improved = is_better(mode, ThresholdMode::Abs, 0.0, metric, self.best);
        if improved {
            self.best = Some(metric);
        }
        let new: Vec<f64> = self
            .base_lrs
            .iter()
            .map(|b| self.config.fixed_lr(*b, self.epoch).unwrap_or(*b))
            .collect();
        let cut = new.iter().zip(&self.lrs).any(|(n, o)| n < o);
        self.lrs = new;
        let stop = match self.config.max_epochs() {
            Some(m) if self.epoch >= m => Some(StopReason::MaxEpochs { epochs: self.epoch }),
            _ => None,
        };
        self.stopped = stop.clone();
        Decision {
            epoch: self.epoch,
            improved,
            cut,
            lrs: self.lrs.clone(),
            reload_best: false,
            stop,
        }
    }
}

// ------------------------------------------------------------------------ common interface

/// Runtime schedule with one interface: `initial(metric)` once, then `step(metric)` per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// Plateau state.
    Plateau(Plateau),
    /// Fixed-schedule state.
    Fixed(Fixed),
}

impl Schedule {
    /// Feeds the evaluation before the first epoch; the caller saves a checkpoint. Called once.
    pub fn initial(&mut self, metric: f64) -> Result<Decision> {
        match self {
            Schedule::Plateau(p) => p.initial(metric),
            Schedule::Fixed(f) => {
                if f.started {
                    return Err(TrainError::StateMismatch(
                        "schedule: initial() called twice".into(),
                    ));
                }
                let mode = f.mode()?;
                f.started = true;
                let mut d = f.decide(mode, metric);
                d.improved = true;
                Ok(d)
            }
        }
    }

    /// Feeds one epoch's evaluation; returns what to do (save, reload, new lrs, stop).
    pub fn step(&mut self, metric: f64) -> Result<Decision> {
        match self {
            Schedule::Plateau(p) => p.step(metric),
            Schedule::Fixed(f) => {
                if !f.started || f.stopped.is_some() {
                    return Err(TrainError::StateMismatch(
                        "schedule: step() before initial() or after stop".into(),
                    ));
                }
                let mode = f.mode()?;
                f.epoch += 1;
                Ok(f.decide(mode, metric))
            }
        }
    }

    /// Current per-group learning rates.
    pub fn lrs(&self) -> &[f64] {
        match self {
            Schedule::Plateau(p) => p.lrs(),
            Schedule::Fixed(f) => &f.lrs,
        }
    }

    /// Completed training epochs.
    pub fn epoch(&self) -> u64 {
        match self {
            Schedule::Plateau(p) => p.epoch(),
            Schedule::Fixed(f) => f.epoch,
        }
    }

    /// Best monitored value of a saved checkpoint.
    pub fn best(&self) -> Option<f64> {
        match self {
            Schedule::Plateau(p) => p.best_saved(),
            Schedule::Fixed(f) => f.best,
        }
    }

    /// Why the stage stopped; `None` while it runs.
    pub fn stopped(&self) -> Option<&StopReason> {
        match self {
            Schedule::Plateau(p) => p.stopped(),
            Schedule::Fixed(f) => f.stopped.as_ref(),
        }
    }
}
