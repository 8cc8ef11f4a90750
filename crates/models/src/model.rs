//! A model with weights: candle `Var`s named like `B3.conv3_1.weight`, a forward pass with taps,
//! and weight inheritance between pyramid levels.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use pyramid_ops::Backend;
use pyramid_rng::Rng;

use crate::blocks::{BlockKind, LayerSpec};
use crate::config::{ModelConfig, ModelId, ModelOptions};
use crate::init::{init_values, InitRule, InitScheme};
use crate::plan::Role;
use crate::spec::{ModelSpec, ParamSpec};
use crate::Error;

/// Train mode draws dropout masks from the caller's RNG and records the graph for backward;
/// eval mode is deterministic and records no graph (no gradient flows from an eval pass).
pub enum Mode<'a> {
    /// Inference: dropout off, batch norm uses its running statistics, no graph recorded.
    Eval,
    /// Training: dropout masks drawn from this RNG, batch norm uses batch statistics.
    Train(&'a mut Rng),
}

impl Mode<'_> {
    /// True in training mode.
    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(_))
    }
}

/// What to read out of one forward pass.
#[derive(Debug, Clone, Default)]
pub struct Taps {
    /// Block names (`B4`, `K12`, `FC1` = logits) or layer names (`B4.conv4_2`, `K12.conv`).
    pub names: Vec<String>,
    /// Stop as soon as every tap is read (skips the rest of the network).
    pub stop_early: bool,
}

impl Taps {
    /// Read `names` and run the whole network (the logits are computed too).
    pub fn of<S: AsRef<str>>(names: &[S]) -> Self {
        Self {
            names: names.iter().map(|s| s.as_ref().to_string()).collect(),
            stop_early: false,
        }
    }
    /// Read `names` and stop there.
    pub fn until<S: AsRef<str>>(names: &[S]) -> Self {
        Self {
            stop_early: true,
            ..Self::of(names)
        }
    }
}

/// Result of `Model::forward_taps`.
#[derive(Debug)]
pub struct Outputs {
    /// The logits, unless the pass stopped early.
    pub logits: Option<Tensor>,
    /// The tapped tensors keyed by the names asked for, each `[B, ...]` as the layer outputs it.
    pub taps: BTreeMap<String, Tensor>,
}

impl Outputs {
    /// The tensor tapped as `name`; an error if it was not asked for.
    pub fn tap(&self, name: &str) -> Result<&Tensor, Error> {
        self.taps
            .get(name)
            .ok_or_else(|| Error::UnknownTap(name.to_string()))
    }
}

/// Which parameters of a student came from its teacher.
#[derive(Debug, Clone, Default)]
pub struct Inheritance {
    /// Parameter names whose values were copied from the teacher (same name, same shape).
    pub inherited: Vec<String>,
    /// Parameter names initialised afresh (the new blocks).
    pub fresh: Vec<String>,
}

/// VGG19 or an SVGG student, with weights.
pub struct Model {
    spec: ModelSpec,
    params: Vec<(String, Var)>,
    buffers: Vec<(String, Var)>,
    index: HashMap<String, usize>,
    backend: Backend,
    /// Whether the fused path (`fused.rs`) may serve eval passes and `train_step_ce`.
    pub(crate) fused: bool,
    device: Device,
}

pub(crate) const BN_EPS: f64 = 1e-5;
pub(crate) const BN_MOMENTUM: f64 = 0.1;

fn init_rule_for(block: BlockKind, scheme: InitScheme) -> InitRule {
    if block.is_compressed_kind() {
        InitRule::PytorchDefault
    } else {
        scheme.rule()
    }
}

impl Model {
    /// A model with fresh weights: the options' init scheme for VGG19's blocks (torchvision's VGG
    /// init by default), PyTorch's default for the compressed blocks (docs/method.md §2.3).
    pub fn new(config: ModelConfig, seed: u64, device: &Device) -> Result<Self, Error> {
        let scheme = config.options.init;
        let spec = ModelSpec::new(config)?;
        Self::from_fn(spec, device, |p| {
            Ok(Tensor::from_vec(
                init_values(p, init_rule_for(p.block, scheme), seed),
                p.shape.as_slice(),
                device,
            )?)
        })
    }

    /// Builds `model` with the options of `teacher`: every parameter whose name exists in the
    /// teacher is copied bit for bit; the others (the compressed block, and for Scratch every new
    /// block) are freshly initialised from `seed`.
    pub fn inherit(
        teacher: &Model,
        model: ModelId,
        seed: u64,
    ) -> Result<(Self, Inheritance), Error> {
        let spec = ModelSpec::of(model, teacher.options().clone())?;
        let scheme = teacher.options().init;
        let mut report = Inheritance::default();
        let device = teacher.device.clone();
        let m = Self::from_fn(spec, &device, |p| match teacher.get(&p.name) {
            Some(t) => {
                if t.dims() != p.shape.as_slice() {
                    return Err(Error::ShapeMismatch {
                        name: p.name.clone(),
                        expected: p.shape.clone(),
                        found: t.dims().to_vec(),
                    });
                }
                report.inherited.push(p.name.clone());
                Ok(t.copy()?)
            }
            None => {
                report.fresh.push(p.name.clone());
                Ok(Tensor::from_vec(
                    init_values(p, init_rule_for(p.block, scheme), seed),
                    p.shape.as_slice(),
                    &device,
                )?)
            }
        })?;
        Ok((m, report))
    }

    /// Builds the model's `Var`s from a function that gives each parameter's initial value.
    pub(crate) fn from_fn(
        spec: ModelSpec,
        device: &Device,
        mut value: impl FnMut(&ParamSpec) -> Result<Tensor, Error>,
    ) -> Result<Self, Error> {
        let mut params = Vec::new();
        let mut buffers = Vec::new();
        let mut index = HashMap::new();
        for p in spec.params() {
            let t = value(&p)?.to_dtype(DType::F32)?.to_device(device)?;
            let var = Var::from_tensor(&t)?;
            if p.is_buffer {
                index.insert(p.name.clone(), usize::MAX - buffers.len());
                buffers.push((p.name, var));
            } else {
                index.insert(p.name.clone(), params.len());
                params.push((p.name, var));
            }
        }
        Ok(Self {
            spec,
            params,
            buffers,
            index,
            backend: Backend::default(),
            fused: true,
            device: device.clone(),
        })
    }

    /// The model's structure: blocks, roles, parameter shapes.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    /// Which model, with its options (what a checkpoint stores).
    pub fn config(&self) -> &ModelConfig {
        &self.spec.config
    }
    /// Which model.
    pub fn id(&self) -> ModelId {
        self.spec.id()
    }
    /// Size options: classes, input size, width, batch norm, init.
    pub fn options(&self) -> &ModelOptions {
        self.spec.options()
    }
    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// Which conv/pool kernels the forward pass uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }
    /// Switch between our fast conv/pool kernels and candle's own (for comparison).
    pub fn set_backend(&mut self, backend: Backend) {
        self.backend = backend;
    }
    /// Allow (the default) or forbid the fused path of `fused.rs` for eval passes and
    /// [`Model::train_step_ce`]; forbidden, they run through candle's ops and autograd.
    pub fn set_fused(&mut self, on: bool) {
        self.fused = on;
    }

    /// Trainable parameters in forward order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }
    /// Batch-norm running statistics (empty without batch norm).
    pub fn buffers(&self) -> &[(String, Var)] {
        &self.buffers
    }

    fn var(&self, name: &str) -> Option<&Var> {
        let i = *self.index.get(name)?;
        if i >= self.params.len() {
            self.buffers.get(usize::MAX - i).map(|(_, v)| v)
        } else {
            self.params.get(i).map(|(_, v)| v)
        }
    }

    /// The current value of a parameter or buffer.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.var(name).map(|v| v.as_tensor())
    }

    /// Overwrites a parameter or buffer (shape-checked).
    pub fn set(&self, name: &str, value: &Tensor) -> Result<(), Error> {
        let var = self
            .var(name)
            .ok_or_else(|| Error::UnknownParam(name.to_string()))?;
        if var.dims() != value.dims() {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: var.dims().to_vec(),
                found: value.dims().to_vec(),
            });
        }
        var.set(&value.to_dtype(DType::F32)?.to_device(&self.device)?)?;
        Ok(())
    }

    /// Parameters of the blocks for which `keep(block, role)` holds.
    pub fn params_where(&self, keep: impl Fn(BlockKind, Role) -> bool) -> Vec<(String, Var)> {
        let roles: HashMap<BlockKind, Role> =
            self.spec.blocks.iter().map(|b| (b.kind, b.role)).collect();
        let block_of = |name: &str| {
            let prefix = name.split('.').next().unwrap_or("");
            BlockKind::from_name(prefix).expect("parameter names start with their block")
        };
        self.params
            .iter()
            .filter(|(n, _)| {
                let b = block_of(n);
                keep(b, roles[&b])
            })
            .cloned()
            .collect()
    }

    /// The parameters computed at or before `tap` (see `ModelSpec::params_up_to`).
    pub fn params_up_to(&self, tap: &str) -> Result<Vec<(String, Var)>, Error> {
        self.spec
            .params_up_to(tap)?
            .into_iter()
            .map(|n| {
                let v = self.var(&n).ok_or_else(|| Error::UnknownParam(n.clone()))?;
                Ok((n, v.clone()))
            })
            .collect()
    }

    /// The parameters up to and including the compressed block: what stage 1 trains (§3.3, §4.3).
    pub fn stage1_params(&self) -> Vec<(String, Var)> {
        self.params_where(|_, role| !role.is_after_compressed())
    }

    /// Number of trainable parameter elements (buffers such as batch-norm statistics excluded).
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Snapshot of every parameter and buffer (cheap: tensors are reference counted, and `Var`
    /// updates replace storage rather than mutate it in place).
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .chain(self.buffers.iter())
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
            .collect::<Result<_, candle_core::Error>>()
            .expect("copying a tensor on its own device cannot fail")
    }

    /// Restores a snapshot taken with `snapshot`.
    pub fn restore(&self, snapshot: &[(String, Tensor)]) -> Result<(), Error> {
        for (n, t) in snapshot {
            self.set(n, t)?;
        }
        Ok(())
    }

    /// Logits.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor, Error> {
        let out = self.forward_taps(x, mode, &Taps::default())?;
        Ok(out.logits.expect("a pass without taps runs to the end"))
    }

    /// One forward pass that also returns the requested block or layer outputs. Eval passes
    /// run the fused path when [`Model::fused_available`].
    pub fn forward_taps(&self, x: &Tensor, mode: Mode, taps: &Taps) -> Result<Outputs, Error> {
        for t in &taps.names {
            if !self.has_tap(t) {
                return Err(Error::UnknownTap(format!("{t} (model {})", self.id())));
            }
        }
        if !mode.is_train() && self.fused_available() {
            return self.fused_eval(x, taps);
        }
        self.forward_graph(x, mode, taps)
    }

    /// [`Model::forward_taps`] through candle's ops (recording the graph in train mode).
    pub(crate) fn forward_graph(
        &self,
        x: &Tensor,
        mut mode: Mode,
        taps: &Taps,
    ) -> Result<Outputs, Error> {
        let o = self.options();
        let (c, h) = (o.in_channels, o.input_size);
        match x.dims() {
            [_, xc, xh, xw] if *xc == c && *xh == h && *xw == h => {}
            d => {
                return Err(Error::InputShape {
                    expected: vec![c, h, h],
                    found: d.to_vec(),
                })
            }
        }
        let mut out = BTreeMap::new();
        let mut x = x.clone();
        let done = |out: &BTreeMap<String, Tensor>| {
            taps.stop_early
                && !taps.names.is_empty()
                && taps.names.iter().all(|t| out.contains_key(t))
        };
        for b in &self.spec.blocks {
            for l in &b.layers {
                x = self.layer_forward(b.kind, l, &x, &mut mode)?;
                if let Some(n) = layer_name(l) {
                    let tap = format!("{}.{}", b.name(), n);
                    if taps.names.contains(&tap) {
                        out.insert(tap, x.clone());
                    }
                }
                if done(&out) {
                    return Ok(Outputs {
                        logits: None,
                        taps: out,
                    });
                }
            }
            if taps.names.iter().any(|t| t == b.name()) {
                out.insert(b.name().to_string(), x.clone());
            }
            if done(&out) && !b.kind.is_head() {
                return Ok(Outputs {
                    logits: None,
                    taps: out,
                });
            }
        }
        Ok(Outputs {
            logits: Some(x),
            taps: out,
        })
    }

    /// True when `name` names a block or a layer of this model.
    pub fn has_tap(&self, name: &str) -> bool {
        self.spec.blocks.iter().any(|b| {
            b.name() == name
                || b.layers
                    .iter()
                    .filter_map(layer_name)
                    .any(|l| format!("{}.{}", b.name(), l) == name)
        })
    }

    fn p(&self, name: String) -> Result<&Tensor, Error> {
        self.get(&name).ok_or(Error::UnknownParam(name))
    }

    /// A parameter for this pass. In eval mode it is detached, so candle records no graph:
    /// each activation is freed as soon as the next layer has consumed it (lower peak memory,
    /// and no gradient can flow from an eval pass).
    fn param_for(&self, name: String, mode: &Mode) -> Result<Tensor, Error> {
        let t = self.p(name)?;
        Ok(match mode {
            Mode::Eval => t.detach(),
            Mode::Train(_) => t.clone(),
        })
    }

    fn layer_forward(
        &self,
        block: BlockKind,
        layer: &LayerSpec,
        x: &Tensor,
        mode: &mut Mode,
    ) -> Result<Tensor, Error> {
        let b = block.name();
        Ok(match layer {
            LayerSpec::Conv { name, .. } => {
                let w = &self.param_for(format!("{b}.{name}.weight"), mode)?;
                let bias = &self.param_for(format!("{b}.{name}.bias"), mode)?;
                if self.options().batch_norm {
                    let y = pyramid_ops::conv2d(x, w, Some(bias), 1, 1, self.backend)?;
                    self.batch_norm(&format!("{b}.{name}.bn"), &y, mode.is_train())?
                        .relu()?
                } else {
                    pyramid_ops::conv2d_relu(x, w, Some(bias), 1, 1, self.backend)?
                }
            }
            LayerSpec::Pool { .. } => pyramid_ops::max_pool2x2(x, self.backend)?,
            LayerSpec::Flatten => x.flatten_from(1)?,
            LayerSpec::Dropout { p } => match mode {
                Mode::Eval => x.clone(),
                Mode::Train(rng) => dropout(x, *p, rng)?,
            },
            LayerSpec::Linear { name, relu, .. } => {
                let w = self.param_for(format!("{b}.{name}.weight"), mode)?;
                let bias = self.param_for(format!("{b}.{name}.bias"), mode)?;
                let y = x.matmul(&w.t()?)?.broadcast_add(&bias)?;
                if *relu {
                    y.relu()?
                } else {
                    y
                }
            }
        })
    }

    /// Batch norm over (N, H, W); train mode uses batch statistics (one fused op) and updates
    /// the running ones (PyTorch semantics: momentum 0.1, unbiased variance for the estimate).
    fn batch_norm(&self, prefix: &str, x: &Tensor, train: bool) -> Result<Tensor, Error> {
        let (n, c, h, w) = x.dims4()?;
        let gamma = self.p(format!("{prefix}.weight"))?;
        let beta = self.p(format!("{prefix}.bias"))?;
        if train {
            let (y, m, v) = pyramid_ops::batch_norm_train(x, gamma, beta, BN_EPS, self.backend)?;
            self.bn_running_update(prefix, &m, &v, n * h * w)?;
            return Ok(y);
        }
        let (a, b) = self.bn_eval_tensors(prefix)?;
        let x3 = x.reshape((n, c, h * w))?;
        Ok(x3
            .broadcast_mul(&a.reshape((1, c, 1))?)?
            .broadcast_add(&b.reshape((1, c, 1))?)?
            .reshape((n, c, h, w))?)
    }
}

impl Model {
    fn bn_buffers(&self, prefix: &str) -> Result<(&Var, &Var), Error> {
        let get = |n: String| self.var(&n).ok_or(Error::UnknownParam(n));
        Ok((
            get(format!("{prefix}.running_mean"))?,
            get(format!("{prefix}.running_var"))?,
        ))
    }

    /// Folds a training batch's mean `m` and biased variance `v` (over `count` values per
    /// channel) into the running statistics: momentum 0.1, unbiased variance (PyTorch).
    pub(crate) fn bn_running_update(
        &self,
        prefix: &str,
        m: &Tensor,
        v: &Tensor,
        count: usize,
    ) -> Result<(), Error> {
        let (rm, rv) = self.bn_buffers(prefix)?;
        let count = count as f64;
        let v = (v * (count / (count - 1.0).max(1.0)))?;
        rm.set(&((rm.as_tensor() * (1.0 - BN_MOMENTUM))? + (m * BN_MOMENTUM)?)?)?;
        rv.set(&((rv.as_tensor() * (1.0 - BN_MOMENTUM))? + (v * BN_MOMENTUM)?)?)?;
        Ok(())
    }

    /// Eval-mode batch norm as a per-channel affine map x·a + b with a = γ/√(σ²+eps),
    /// b = β − μ·a.
    fn bn_eval_tensors(&self, prefix: &str) -> Result<(Tensor, Tensor), Error> {
        let gamma = self.p(format!("{prefix}.weight"))?.detach();
        let beta = self.p(format!("{prefix}.bias"))?.detach();
        let (rm, rv) = self.bn_buffers(prefix)?;
        let a = (gamma / (rv.as_tensor() + BN_EPS)?.sqrt()?)?;
        let b = (beta - (rm.as_tensor() * &a)?)?;
        Ok((a, b))
    }

    /// [`Model::bn_eval_tensors`] as values.
    pub(crate) fn bn_eval_affine(&self, prefix: &str) -> Result<(Vec<f32>, Vec<f32>), Error> {
        let (a, b) = self.bn_eval_tensors(prefix)?;
        Ok((a.to_vec1::<f32>()?, b.to_vec1::<f32>()?))
    }
}

fn layer_name(l: &LayerSpec) -> Option<&str> {
    l.name()
}

/// Inverted dropout with a mask from our RNG (kept values are scaled by 1/(1−p)).
fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor, Error> {
    let mask = Tensor::from_vec(dropout_mask(x.elem_count(), p, rng), x.shape(), x.device())?;
    Ok((x * mask)?)
}

/// `n` dropout multipliers: 0 with probability `p`, 1/(1−p) otherwise, drawn in order.
pub(crate) fn dropout_mask(n: usize, p: f64, rng: &mut Rng) -> Vec<f32> {
    let scale = 1.0 / (1.0 - p);
    (0..n)
        .map(|_| {
            if rng.next_f64() < p {
                0.0
            } else {
                scale as f32
            }
        })
        .collect()
}
