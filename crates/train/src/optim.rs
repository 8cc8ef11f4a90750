//! Optimisers (candle 0.11 has no SGD momentum, coupled-decay Adam or param groups).
//!
//! All three share one engine (`Optim<R>`): parameter groups with their own lr / weight decay,
//! per-parameter step counts and buffers, and a state that saves to one safetensors file.
//! Parameters without a gradient in the `GradStore` are skipped entirely (docs/method.md §8.1).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::fsio::write_atomic;

mod fused;

/// A named set of parameters sharing a learning rate and a weight decay.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// Group name, unique within an optimiser (e.g. `"features"`, `"head"`); states are matched by
    /// it.
    pub name: String,
    /// The parameters, each with its unique name (the state-dict key), in update order.
    pub params: Vec<(String, Var)>,
    /// Learning rate, finite and ≥ 0.
    pub lr: f64,
    /// Weight decay, finite and ≥ 0 (coupled or decoupled depending on the rule).
    pub weight_decay: f64,
}

/// Everything an optimiser needs to resume exactly: JSON-serialisable metadata plus the
/// per-parameter buffers (moments, momentum) as tensors keyed `"<param>/<buffer>"`.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// Optimiser kind, groups and step counts.
    pub meta: OptimizerMeta,
    /// Per-parameter buffers keyed `"<param>/<buffer>"`, e.g. `"B1.conv1_1.weight/exp_avg"`.
    pub tensors: BTreeMap<String, Tensor>,
}

/// The JSON part of an [`OptimizerState`], stored in the safetensors header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerMeta {
    /// "adam", "adamw" or "sgd".
    pub kind: String,
    /// The parameter groups, in construction order.
    pub groups: Vec<GroupMeta>,
    /// Per-parameter step count (only parameters that have been stepped at least once).
    pub steps: BTreeMap<String, u64>,
}

/// Name and hyper-parameters of one parameter group, as saved in an [`OptimizerMeta`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMeta {
    /// Group name, as in [`ParamGroup::name`].
    pub name: String,
    /// The group's learning rate at the time of the snapshot.
    pub lr: f64,
    /// The group's weight decay.
    pub weight_decay: f64,
}

const META_KEY: &str = "pyramid.optimizer";

impl OptimizerState {
    /// Saves atomically as safetensors; the metadata goes in the header under `pyramid.optimizer`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let meta = serde_json::to_string(&self.meta).map_err(|e| TrainError::Json {
            path: Some(path.to_path_buf()),
            source: e,
        })?;
        let info = std::collections::HashMap::from([(META_KEY.to_string(), meta)]);
        let bytes =
            safetensors::tensor::serialize(self.tensors.iter(), Some(info)).map_err(|e| {
                TrainError::Safetensors {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                }
            })?;
        write_atomic(path, &pyramid_fsio::canonical_safetensors(bytes))
    }

    /// Loads a file written by `save`, tensors placed on `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let st_err = |message: String| TrainError::Safetensors {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| TrainError::io("read", path, e))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| st_err(e.to_string()))?;
        let meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| st_err(format!("no `{META_KEY}` metadata")))?;
        let meta: OptimizerMeta = serde_json::from_str(meta).map_err(|e| TrainError::Json {
            path: Some(path.to_path_buf()),
            source: e,
        })?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| st_err(e.to_string()))?
            .into_iter()
            .collect();
        Ok(Self { meta, tensors })
    }
}

/// Common interface of the optimisers. Group indices follow the order of construction.
pub trait Optimizer: Send {
    /// "adam", "adamw" or "sgd".
    fn kind(&self) -> &'static str;
    /// One update of every parameter that has a gradient in `grads`.
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// Number of parameter groups.
    fn num_groups(&self) -> usize;
    /// Name of group `group` (an index in construction order).
    fn group_name(&self, group: usize) -> &str;
    /// Current learning rate of group `group`.
    fn lr(&self, group: usize) -> f64;
    /// Sets the learning rate of group `group`.
    fn set_lr(&mut self, group: usize, lr: f64);
    /// A snapshot: buffers are copied, because the fused path updates them in place.
    fn state(&self) -> Result<OptimizerState>;
    /// Restores `state`; groups are matched by name, parameters by name. Parameters absent from
    /// the state start fresh (they had never been stepped).
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;

    /// Learning rates of all groups, in group order.
    fn lrs(&self) -> Vec<f64> {
        (0..self.num_groups()).map(|g| self.lr(g)).collect()
    }
    /// Sets every group's learning rate; `lrs.len()` must equal the number of groups.
    fn set_lrs(&mut self, lrs: &[f64]) -> Result<()> {
        if lrs.len() != self.num_groups() {
            return Err(TrainError::StateMismatch(format!(
                "{} learning rates for {} groups",
                lrs.len(),
                self.num_groups()
            )));
        }
        for (g, lr) in lrs.iter().enumerate() {
            self.set_lr(g, *lr);
        }
        Ok(())
    }
    /// Multiplies every group's learning rate by `factor`.
    fn scale_lr(&mut self, factor: f64) {
        for g in 0..self.num_groups() {
            let lr = self.lr(g);
            self.set_lr(g, lr * factor);
        }
    }
    /// Saves [`Optimizer::state`] atomically to `path` (safetensors).
    fn save(&self, path: &Path) -> Result<()> {
        self.state()?.save(path)
    }
    /// Loads a state written by [`Optimizer::save`], tensors on `device`, and restores it.
    fn load(&mut self, path: &Path, device: &Device) -> Result<()> {
        let state = OptimizerState::load(path, device)?;
        self.load_state(&state)
    }
}

/// A per-parameter update rule plugged into `Optim`.
pub trait UpdateRule: Send {
    /// The optimiser kind saved in the state (`"adam"`, `"adamw"`, `"sgd"`); a load checks it.
    const KIND: &'static str;
    /// Names of the per-parameter buffers (saved as `"<param>/<name>"`).
    const BUFFERS: &'static [&'static str];
    /// Returns the new parameter value. `step` is this parameter's step count, already
    /// incremented (1 on the first update). Buffers start as `None`.
    fn update(
        &self,
        theta: &Tensor,
        grad: &Tensor,
        step: u64,
        lr: f64,
        weight_decay: f64,
        buffers: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor>;

    /// The same update as an in-place f32 kernel over `(θ, g, buffer 0, buffer 1)` chunks,
    /// for two-buffer rules (Adam, AdamW): the CPU fast path, one pass over memory instead of a
    /// dozen tensor ops each allocating a parameter-sized buffer. It must give bit-identical
    /// results to `update` (fresh buffers are passed as zeros). `None`: use `update`.
    fn fused(&self, _step: u64, _lr: f64, _weight_decay: f64) -> Option<FusedKernel> {
        None
    }
}

/// See [`UpdateRule::fused`].
pub type FusedKernel = Box<dyn Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync>;

#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    step: u64,
    buffers: Vec<Option<Tensor>>,
}

#[derive(Debug)]
struct Group {
    name: String,
    lr: f64,
    weight_decay: f64,
    slots: Vec<Slot>,
}

/// The shared optimiser engine; use the aliases `Adam`, `AdamW`, `Sgd`.
#[derive(Debug)]
pub struct Optim<R: UpdateRule> {
    groups: Vec<Group>,
    rule: R,
}

/// Adam with coupled weight decay (PyTorch 0.2 semantics), see [`AdamParams`].
pub type Adam = Optim<AdamParams>;
/// AdamW with decoupled weight decay, see [`AdamWParams`].
pub type AdamW = Optim<AdamWParams>;
/// SGD with optional (Nesterov) momentum, see [`SgdParams`].
pub type Sgd = Optim<SgdParams>;

fn check_rate(what: &str, group: &str, x: f64) -> Result<()> {
    if !(x.is_finite() && x >= 0.0) {
        return Err(TrainError::Config(format!(
            "group `{group}`: {what} must be finite and >= 0, got {x}"
        )));
    }
    Ok(())
}

impl<R: UpdateRule> Optim<R> {
    /// Builds the optimiser. Group names and parameter names must be unique.
    pub fn new(groups: Vec<ParamGroup>, rule: R) -> Result<Self> {
        let mut group_names = HashSet::new();
        let mut param_names = HashSet::new();
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            if !group_names.insert(g.name.clone()) {
                return Err(TrainError::Config(format!("duplicate group `{}`", g.name)));
            }
            check_rate("lr", &g.name, g.lr)?;
            check_rate("weight_decay", &g.name, g.weight_decay)?;
            let mut slots = Vec::with_capacity(g.params.len());
            for (name, var) in g.params {
                if !param_names.insert(name.clone()) {
                    return Err(TrainError::Config(format!("duplicate parameter `{name}`")));
                }
                slots.push(Slot {
                    name,
                    var,
                    step: 0,
                    buffers: vec![None; R::BUFFERS.len()],
                });
            }
            out.push(Group {
                name: g.name,
                lr: g.lr,
                weight_decay: g.weight_decay,
                slots,
            });
        }
        Ok(Self { groups: out, rule })
    }

    /// The update rule and its hyper-parameters.
    pub fn rule(&self) -> &R {
        &self.rule
    }

    /// Step count of parameter `name` (0 if never stepped or unknown).
    pub fn param_step(&self, name: &str) -> u64 {
        self.groups
            .iter()
            .flat_map(|g| &g.slots)
            .find(|s| s.name == name)
            .map_or(0, |s| s.step)
    }
}

impl<R: UpdateRule> Optimizer for Optim<R> {
    fn kind(&self) -> &'static str {
        R::KIND
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for g in &mut self.groups {
            for s in &mut g.slots {
                // No gradient ⇒ untouched: no decay, no step count (docs/method.md §8.1).
                let Some(grad) = grads.get(s.var.as_tensor()) else {
                    continue;
                };
                let theta = s.var.as_detached_tensor();
                let grad = grad.detach();
                s.step += 1;
                if fused::applies(&theta, &grad) {
                    if let Some(kernel) = self.rule.fused(s.step, g.lr, g.weight_decay) {
                        fused::step(&kernel, &theta, &grad, &mut s.buffers)?;
                        continue;
                    }
                }
                let new = self.rule.update(
                    &theta,
                    &grad,
                    s.step,
                    g.lr,
                    g.weight_decay,
                    &mut s.buffers,
                )?;
                s.var.set(&new)?;
            }
        }
        Ok(())
    }

    fn num_groups(&self) -> usize {
        self.groups.len()
    }

    fn group_name(&self, group: usize) -> &str {
        &self.groups[group].name
    }

    fn lr(&self, group: usize) -> f64 {
        self.groups[group].lr
    }

    fn set_lr(&mut self, group: usize, lr: f64) {
        self.groups[group].lr = lr;
    }

    fn state(&self) -> Result<OptimizerState> {
        let mut steps = BTreeMap::new();
        let mut tensors = BTreeMap::new();
        for s in self.groups.iter().flat_map(|g| &g.slots) {
            if s.step > 0 {
                steps.insert(s.name.clone(), s.step);
            }
            for (buf, t) in R::BUFFERS.iter().zip(&s.buffers) {
                if let Some(t) = t {
                    tensors.insert(format!("{}/{}", s.name, buf), t.copy()?);
                }
            }
        }
        Ok(OptimizerState {
            meta: OptimizerMeta {
                kind: R::KIND.to_string(),
                groups: self
                    .groups
                    .iter()
                    .map(|g| GroupMeta {
                        name: g.name.clone(),
                        lr: g.lr,
                        weight_decay: g.weight_decay,
                    })
                    .collect(),
                steps,
            },
            tensors,
        })
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let mismatch = |m: String| Err(TrainError::StateMismatch(m));
        if state.meta.kind != R::KIND {
            return mismatch(format!(
                "state is for `{}`, optimiser is `{}`",
                state.meta.kind,
                R::KIND
            ));
        }
        if state.meta.groups.len() != self.groups.len() {
            return mismatch(format!(
                "state has {} groups, optimiser {}",
                state.meta.groups.len(),
                self.groups.len()
            ));
        }
        // Validate everything before changing anything.
        let mut used = HashSet::new();
        let mut plan = Vec::new();
        for g in &self.groups {
            let Some(gm) = state.meta.groups.iter().find(|m| m.name == g.name) else {
                return mismatch(format!("group `{}` missing from state", g.name));
            };
            let mut slots = Vec::new();
            for s in &g.slots {
                let step = state.meta.steps.get(&s.name).copied().unwrap_or(0);
                if step > 0 {
                    used.insert(s.name.clone());
                }
                let mut bufs = Vec::new();
                for buf in R::BUFFERS {
                    let key = format!("{}/{}", s.name, buf);
                    match state.tensors.get(&key) {
                        Some(t) => {
                            if t.shape() != s.var.shape() {
                                return mismatch(format!(
                                    "`{key}`: shape {:?}, parameter {:?}",
                                    t.shape(),
                                    s.var.shape()
                                ));
                            }
                            used.insert(key);
                            // A copy, never shared with `state`: buffers may be updated
                            // in place.
                            let t = t
                                .to_device(s.var.device())?
                                .to_dtype(s.var.dtype())?
                                .copy()?;
                            bufs.push(Some(t));
                        }
                        None => bufs.push(None),
                    }
                }
                slots.push((step, bufs));
            }
            plan.push((gm.lr, gm.weight_decay, slots));
        }
        if let Some(k) = state
            .meta
            .steps
            .keys()
            .chain(state.tensors.keys())
            .find(|k| !used.contains(*k))
        {
            return mismatch(format!("state entry `{k}` matches no parameter"));
        }
        for (g, (lr, wd, slots)) in self.groups.iter_mut().zip(plan) {
            g.lr = lr;
            g.weight_decay = wd;
            for (s, (step, bufs)) in g.slots.iter_mut().zip(slots) {
                s.step = step;
                s.buffers = bufs;
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------ rules

/// Adam with coupled weight decay, exactly as PyTorch 0.2 (docs/method.md §8.1):
/// g ← g + wd·θ; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
/// θ ← θ − lr·√(1−β2^t)/(1−β1^t) · m / (√v + eps) — eps added to the un-corrected √v
/// (modern PyTorch adds eps after the bias correction instead).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamParams {
    /// Decay rate of the first moment (mean of the gradient), in [0, 1).
    pub beta1: f64,
    /// Decay rate of the second moment (uncentred variance of the gradient), in [0, 1).
    pub beta2: f64,
    /// Added to √v in the denominator for numerical stability.
    pub eps: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam's bias corrections `(1 − β1^t, 1 − β2^t)` at step `t`, shared by the tensor and the
/// fused paths of Adam and AdamW so both see the same f64 values.
fn bias_corrections(beta1: f64, beta2: f64, step: u64) -> (f64, f64) {
    let t = step as f64;
    (1.0 - beta1.powf(t), 1.0 - beta2.powf(t))
}

fn ema(prev: &Option<Tensor>, x: &Tensor, beta: f64) -> candle_core::Result<Tensor> {
    // Fresh buffers are zeros, and 0·β + (1−β)x = (1−β)x exactly.
    let fresh = x.affine(1.0 - beta, 0.0)?;
    match prev {
        Some(p) => p.affine(beta, 0.0)? + fresh,
        None => Ok(fresh),
    }
}

impl UpdateRule for AdamParams {
    const KIND: &'static str = "adam";
    const BUFFERS: &'static [&'static str] = &["exp_avg", "exp_avg_sq"];

    fn update(
        &self,
        theta: &Tensor,
        grad: &Tensor,
        step: u64,
        lr: f64,
        weight_decay: f64,
        buffers: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let g = if weight_decay != 0.0 {
            (grad + theta.affine(weight_decay, 0.0)?)?
        } else {
            grad.clone()
        };
        let m = ema(&buffers[0], &g, self.beta1)?;
        let v = ema(&buffers[1], &g.sqr()?, self.beta2)?;
        let denom = v.sqrt()?.affine(1.0, self.eps)?;
        let (bc1, bc2) = bias_corrections(self.beta1, self.beta2, step);
        let step_size = lr * bc2.sqrt() / bc1;
        let new = (theta - (m.div(&denom)? * step_size)?)?;
        buffers[0] = Some(m);
        buffers[1] = Some(v);
        Ok(new)
    }

    fn fused(&self, step: u64, lr: f64, weight_decay: f64) -> Option<FusedKernel> {
        // The constants exactly as candle's `affine` sees them in `update` (f64 → f32).
        let (bc1, bc2) = bias_corrections(self.beta1, self.beta2, step);
        let step_size = (lr * bc2.sqrt() / bc1) as f32;
        let (b1, c1) = (self.beta1 as f32, (1.0 - self.beta1) as f32);
        let (b2, c2) = (self.beta2 as f32, (1.0 - self.beta2) as f32);
        let (wd, eps, decay) = (weight_decay as f32, self.eps as f32, weight_decay != 0.0);
        Some(Box::new(move |theta, grad, m, v| {
            for (((th, &g), m), v) in theta.iter_mut().zip(grad).zip(m).zip(v) {
                let g = if decay { g + *th * wd } else { g };
                *m = *m * b1 + g * c1;
                *v = *v * b2 + g * g * c2;
                *th -= *m / (v.sqrt() + eps) * step_size;
            }
        }))
    }
}

/// AdamW (Loshchilov & Hutter), PyTorch `torch.optim.AdamW` formula:
/// θ ← θ·(1 − lr·wd); m, v as Adam on the raw gradient;
/// θ ← θ − lr/(1−β1^t) · m / (√v/√(1−β2^t) + eps).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWParams {
    /// Decay rate of the first moment, in [0, 1).
    pub beta1: f64,
    /// Decay rate of the second moment, in [0, 1).
    pub beta2: f64,
    /// Added to the bias-corrected √v in the denominator.
    pub eps: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl UpdateRule for AdamWParams {
    const KIND: &'static str = "adamw";
    const BUFFERS: &'static [&'static str] = &["exp_avg", "exp_avg_sq"];

    fn update(
        &self,
        theta: &Tensor,
        grad: &Tensor,
        step: u64,
        lr: f64,
        weight_decay: f64,
        buffers: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let theta = if weight_decay != 0.0 {
            theta.affine(1.0 - lr * weight_decay, 0.0)?
        } else {
            theta.clone()
        };
        let m = ema(&buffers[0], grad, self.beta1)?;
        let v = ema(&buffers[1], &grad.sqr()?, self.beta2)?;
        let (bc1, bc2) = bias_corrections(self.beta1, self.beta2, step);
        let denom = (v.sqrt()? / bc2.sqrt())?.affine(1.0, self.eps)?;
        let new = (&theta - (m.div(&denom)? * (lr / bc1))?)?;
        buffers[0] = Some(m);
        buffers[1] = Some(v);
        Ok(new)
    }

    fn fused(&self, step: u64, lr: f64, weight_decay: f64) -> Option<FusedKernel> {
        // The constants exactly as candle's `affine` sees them in `update` (f64 → f32;
        // `x / s` is `x · (1/s)`).
        let (bc1, bc2) = bias_corrections(self.beta1, self.beta2, step);
        let inv_bc2_sqrt = (1.0 / bc2.sqrt()) as f32;
        let step_size = (lr / bc1) as f32;
        let shrink = (1.0 - lr * weight_decay) as f32;
        let (b1, c1) = (self.beta1 as f32, (1.0 - self.beta1) as f32);
        let (b2, c2) = (self.beta2 as f32, (1.0 - self.beta2) as f32);
        let (eps, decay) = (self.eps as f32, weight_decay != 0.0);
        Some(Box::new(move |theta, grad, m, v| {
            for (((th, &g), m), v) in theta.iter_mut().zip(grad).zip(m).zip(v) {
                let th0 = if decay { *th * shrink } else { *th };
                *m = *m * b1 + g * c1;
                *v = *v * b2 + g * g * c2;
                *th = th0 - *m / (v.sqrt() * inv_bc2_sqrt + eps) * step_size;
            }
        }))
    }
}

/// SGD with PyTorch `torch.optim.SGD` semantics: d = g + wd·θ; with momentum μ:
/// b ← d on the first step, else b ← μ b + (1 − dampening) d; d ← d + μ b (Nesterov) or b;
/// θ ← θ − lr·d.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SgdParams {
    /// Momentum factor μ; 0 disables momentum (and its buffer).
    pub momentum: f64,
    /// Dampening of the gradient in the momentum update (PyTorch's `dampening`).
    pub dampening: f64,
    /// Nesterov momentum (needs μ > 0 and no dampening).
    pub nesterov: bool,
}

impl UpdateRule for SgdParams {
    const KIND: &'static str = "sgd";
    const BUFFERS: &'static [&'static str] = &["momentum_buffer"];

    fn update(
        &self,
        theta: &Tensor,
        grad: &Tensor,
        _step: u64,
        lr: f64,
        weight_decay: f64,
        buffers: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let mut d = if weight_decay != 0.0 {
            (grad + theta.affine(weight_decay, 0.0)?)?
        } else {
            grad.clone()
        };
        if self.momentum != 0.0 {
            let buf = match &buffers[0] {
                None => d.clone(),
                Some(b) => {
                    (b.affine(self.momentum, 0.0)? + d.affine(1.0 - self.dampening, 0.0)?)?
                }
            };
            d = if self.nesterov {
                (d + buf.affine(self.momentum, 0.0)?)?
            } else {
                buf.clone()
            };
            buffers[0] = Some(buf);
        }
        theta - d.affine(lr, 0.0)?
    }
}

// ------------------------------------------------------------------------------------ config

/// Per-group overrides of the optimiser-wide lr / weight decay (e.g. head lr 1e-3, docs/method.md §13 B11).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupOverride {
    /// Learning rate of this group instead of the optimiser's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Weight decay of this group instead of the optimiser's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
}

/// Adam / AdamW settings; defaults are docs/method.md §9.1 (lr 1e-4, β (0.9, 0.999), eps 1e-8, wd 5e-4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate of every group without an override.
    pub lr: f64,
    /// (β1, β2): decay rates of the first and second moments.
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Weight decay of every group without an override (coupled for Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// Overrides keyed by group name; unknown names are an error at `build`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupOverride>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 5e-4,
            groups: BTreeMap::new(),
        }
    }
}

/// SGD settings; lr and weight decay default to docs/method.md §9.1, the rest to PyTorch's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate of every group without an override.
    pub lr: f64,
    /// Momentum factor μ; 0 disables momentum.
    pub momentum: f64,
    /// Dampening of the gradient in the momentum update.
    pub dampening: f64,
    /// Nesterov momentum (needs `momentum` > 0 and `dampening` = 0).
    pub nesterov: bool,
    /// Weight decay (added to the gradient) of every group without an override.
    pub weight_decay: f64,
    /// Overrides keyed by group name; unknown names are an error at `build`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupOverride>,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 5e-4,
            groups: BTreeMap::new(),
        }
    }
}

/// Optimiser choice, e.g. `{"kind": "adam", "lr": 1e-3, "groups": {"head": {"lr": 1e-3}}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// Adam with coupled weight decay (PyTorch 0.2), [`AdamParams`].
    Adam(AdamConfig),
    /// AdamW, decoupled weight decay, [`AdamWParams`].
    #[serde(rename = "adamw")]
    AdamW(AdamConfig),
    /// SGD, [`SgdParams`].
    Sgd(SgdConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Adam(AdamConfig::default())
    }
}

impl OptimizerConfig {
    fn base(&self) -> (f64, f64, &BTreeMap<String, GroupOverride>) {
        match self {
            OptimizerConfig::Adam(c) | OptimizerConfig::AdamW(c) => {
                (c.lr, c.weight_decay, &c.groups)
            }
            OptimizerConfig::Sgd(c) => (c.lr, c.weight_decay, &c.groups),
        }
    }

    /// A short description, e.g. `adam lr 0.001 wd 0.0005` (group overrides noted as `+groups`).
    pub fn describe(&self) -> String {
        let (lr, wd, groups) = self.base();
        let kind = match self {
            OptimizerConfig::Adam(_) => "adam",
            OptimizerConfig::AdamW(_) => "adamw",
            OptimizerConfig::Sgd(_) => "sgd",
        };
        let extra = if groups.is_empty() { "" } else { " +groups" };
        format!("{kind} lr {lr} wd {wd}{extra}")
    }

    /// Attaches lr / weight decay (config-wide or per-group override) to named parameter sets.
    pub fn param_groups(
        &self,
        named: Vec<(String, Vec<(String, Var)>)>,
    ) -> Result<Vec<ParamGroup>> {
        let (lr, wd, overrides) = self.base();
        if let Some(unknown) = overrides
            .keys()
            .find(|k| !named.iter().any(|(n, _)| n == *k))
        {
            return Err(TrainError::Config(format!(
                "override for unknown parameter group `{unknown}`"
            )));
        }
        Ok(named
            .into_iter()
            .map(|(name, params)| {
                let o = overrides.get(&name).cloned().unwrap_or_default();
                ParamGroup {
                    lr: o.lr.unwrap_or(lr),
                    weight_decay: o.weight_decay.unwrap_or(wd),
                    name,
                    params,
                }
            })
            .collect())
    }

    /// Validates the hyper-parameters: lr and weight decay (config-wide and every per-group
    /// override) finite and >= 0 (lr = 0 is allowed), then the kind's own settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        let (lr, wd, overrides) = self.base();
        let rate = |what: String, x: f64| {
            if x.is_finite() && x >= 0.0 {
                Ok(())
            } else {
                bad(format!("{what} must be finite and >= 0, got {x}"))
            }
        };
        rate("lr".into(), lr)?;
        rate("weight_decay".into(), wd)?;
        for (name, o) in overrides {
            if let Some(x) = o.lr {
                rate(format!("groups.{name}.lr"), x)?;
            }
            if let Some(x) = o.weight_decay {
                rate(format!("groups.{name}.weight_decay"), x)?;
            }
        }
        match self {
            OptimizerConfig::Adam(c) | OptimizerConfig::AdamW(c) => {
                let (b1, b2) = c.betas;
                if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
                    return bad(format!("betas must be in [0, 1), got ({b1}, {b2})"));
                }
                if !(c.eps.is_finite() && c.eps >= 0.0) {
                    return bad(format!("eps must be >= 0, got {}", c.eps));
                }
            }
            OptimizerConfig::Sgd(c) => {
                if !(c.momentum.is_finite() && c.momentum >= 0.0) {
                    return bad(format!("momentum must be >= 0, got {}", c.momentum));
                }
                if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
                    return bad("nesterov needs momentum > 0 and dampening = 0".into());
                }
            }
        }
        Ok(())
    }

    /// Builds the optimiser over named parameter sets (group name, parameters).
    pub fn build(&self, named: Vec<(String, Vec<(String, Var)>)>) -> Result<Box<dyn Optimizer>> {
        self.validate()?;
        let groups = self.param_groups(named)?;
        Ok(match self {
            OptimizerConfig::Adam(c) => Box::new(Adam::new(
                groups,
                AdamParams {
                    beta1: c.betas.0,
                    beta2: c.betas.1,
                    eps: c.eps,
                },
            )?),
            OptimizerConfig::AdamW(c) => Box::new(AdamW::new(
                groups,
                AdamWParams {
                    beta1: c.betas.0,
                    beta2: c.betas.1,
                    eps: c.eps,
                },
            )?),
            OptimizerConfig::Sgd(c) => Box::new(Sgd::new(
                groups,
                SgdParams {
                    momentum: c.momentum,
                    dampening: c.dampening,
                    nesterov: c.nesterov,
                },
            )?),
        })
    }
}

/// Scales the gradients of `vars` so that their global L2 norm is at most `max_norm`
/// (PyTorch `clip_grad_norm_`: coefficient max_norm / (norm + 1e-6)). Returns the norm before
/// clipping. Variables without a gradient are ignored.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_vec0::<f64>()?;
        }
    }
    let norm = total.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * coef)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}
