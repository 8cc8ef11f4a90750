//! The VGG family's training step and inference pass on plain buffers, without candle's graph.
//!
//! At the CPU configs' widths (8 to 64 channels at 32×32) a training step through candle's
//! autograd spends more time on graph bookkeeping, per-op allocation, its thread pool and
//! broadcast kernels than on the convolutions. Every model here is a chain of 3×3 convs (with or
//! without batch norm), 2×2 max-pools, a flatten, dropout and linear layers, so one forward
//! that keeps what the backward needs, followed by that backward, is short to write: it calls
//! the same conv and pool kernels as the candle ops (`pyramid_ops::slices`), and hands the
//! gradients back as a candle [`GradStore`] for the usual optimisers.
//!
//! The fused path runs on the CPU in f32 with `Backend::Fast`; [`Model::fused_available`] says
//! whether it applies. `tests/fused.rs` checks its loss, logits, gradients and batch-norm
//! statistics against the candle path on every CPU-config model.

use std::collections::BTreeMap;
use std::rc::Rc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use pyramid_ops::slices::{self, ChannelStats, Conv3x3};
use pyramid_ops::{Backend, ConvOptions, Isa};
use pyramid_rng::Rng;

use crate::blocks::LayerSpec;
use crate::model::{dropout_mask, Mode, Model, Outputs, Taps, BN_EPS};
use crate::Error;

/// The result of [`Model::train_step_ce`].
#[derive(Debug)]
pub struct TrainStep {
    /// The batch-mean softmax cross-entropy.
    pub loss: f64,
    /// The logits `[B, classes]` of the training-mode forward pass.
    pub logits: Tensor,
    /// The gradient of `loss` for every parameter of the model.
    pub grads: GradStore,
}

/// A batch norm's input (the conv output), statistics and forward scale and shift.
struct SavedBn {
    z: Vec<f32>,
    stats: ChannelStats,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

/// The loss of a fused step.
enum Objective<'a> {
    /// Batch-mean softmax cross-entropy of the logits against these labels.
    CrossEntropy(&'a [u32]),
    /// `Σ (student tap − target)²` over the batch (the hint loss, `MSE_sum`), the forward
    /// stopping at the tap.
    Hint { tap: &'a str, target: &'a [f32] },
}

/// The result of [`Model::train_step_hint`].
#[derive(Debug)]
pub struct HintStep {
    /// `Σ (student tap − target)²` over the batch.
    pub loss: f64,
    /// Its gradient for every parameter computed at or before the tap.
    pub grads: GradStore,
}

/// What one layer's backward needs from its forward.
enum Saved {
    /// `relu(conv(x))` or `relu(bn(conv(x)))`; `z` is the conv output before batch norm.
    Conv {
        prefix: String,
        s: Conv3x3,
        bn: Option<SavedBn>,
    },
    Pool {
        planes: usize,
        h: usize,
        w: usize,
    },
    Flatten,
    Dropout {
        mask: Vec<f32>,
    },
    Linear {
        prefix: String,
        rows: usize,
        d_in: usize,
        d_out: usize,
        relu: bool,
    },
}

/// Shape of the activation between layers: `[b, c, h, w]`, or `[b, c]` after a flatten (h = w =
/// 1 and `flat`).
#[derive(Clone, Copy, Debug)]
struct Shape4 {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
}

impl Shape4 {
    fn len(&self) -> usize {
        self.b * self.c * self.h * self.w
    }
}

/// Copies a tensor's values out as contiguous f32.
fn values(t: &Tensor) -> Result<Vec<f32>, Error> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

impl Model {
    /// Whether [`Model::train_step_ce`] and eval-mode forward passes run the fused path here:
    /// CPU, f32 weights, `Backend::Fast`, and not switched off with [`Model::set_fused`].
    pub fn fused_available(&self) -> bool {
        self.fused && self.device().is_cpu() && self.backend() == Backend::Fast
    }

    /// One training-mode forward pass, batch-mean cross-entropy against `labels` (integer class
    /// indices `[B]`) and its backward: the loss, the logits and every parameter's gradient.
    /// Batch norm's running statistics are updated, and dropout draws its masks from `rng`, as
    /// in [`Model::forward`] with `Mode::Train`. Runs the fused path when
    /// [`Model::fused_available`], candle's autograd otherwise (the same numbers up to float
    /// rounding).
    pub fn train_step_ce(
        &self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut Rng,
    ) -> Result<TrainStep, Error> {
        if self.fused_available() {
            self.fused_train_step(images, labels, rng)
        } else {
            self.candle_train_step(images, labels, rng)
        }
    }

    /// One training-mode forward pass up to the tap `tap` (a block or layer name), the hint loss
    /// `Σ (tap − target)²` over the batch (`MSE_sum`, the pyramid stage 1 and FitNet without a
    /// regressor) and its backward: the loss and the gradients of the parameters computed at or
    /// before the tap. Fused where [`Model::fused_available`], candle's autograd otherwise.
    pub fn train_step_hint(
        &self,
        images: &Tensor,
        tap: &str,
        target: &Tensor,
        rng: &mut Rng,
    ) -> Result<HintStep, Error> {
        if !self.has_tap(tap) {
            return Err(Error::UnknownTap(format!("{tap} (model {})", self.id())));
        }
        if self.fused_available() {
            let t = values(target)?;
            let objective = Objective::Hint { tap, target: &t };
            let (loss, _, grads) = self.fused_step(images, objective, rng)?;
            return Ok(HintStep { loss, grads });
        }
        let out = self.forward_graph(images, Mode::Train(rng), &Taps::until(&[tap]))?;
        let s = out.tap(tap)?;
        let loss = (s - target.detach())?.sqr()?.sum_all()?;
        let grads = loss.backward()?;
        Ok(HintStep {
            loss: loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            grads,
        })
    }

    /// [`Model::train_step_ce`] through candle's autograd (the reference for the fused path).
    pub fn candle_train_step(
        &self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut Rng,
    ) -> Result<TrainStep, Error> {
        let logits = self.forward_graph(images, Mode::Train(rng), &Taps::default())?;
        let logits = logits.logits.expect("a pass without taps runs to the end");
        let idx = labels.to_dtype(DType::U32)?.unsqueeze(1)?;
        let lse = logits.log_sum_exp(1)?;
        let picked = logits.gather(&idx, 1)?.squeeze(1)?;
        let loss = (lse - picked)?.mean_all()?;
        let grads = loss.backward()?;
        Ok(TrainStep {
            loss: loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            logits,
            grads,
        })
    }

    fn check_input(&self, x: &Tensor) -> Result<Shape4, Error> {
        let o = self.options();
        let (c, h) = (o.in_channels, o.input_size);
        match x.dims() {
            [b, xc, xh, xw] if *xc == c && *xh == h && *xw == h => Ok(Shape4 { b: *b, c, h, w: h }),
            d => Err(Error::InputShape {
                expected: vec![c, h, h],
                found: d.to_vec(),
            }),
        }
    }

    /// A conv layer's parameter prefix, weight, bias and geometry for an input of `shape`.
    fn conv_layer(
        &self,
        block: &str,
        name: &str,
        c_in: usize,
        c_out: usize,
        shape: &Shape4,
    ) -> Result<(String, Vec<f32>, Vec<f32>, Conv3x3), Error> {
        let prefix = format!("{block}.{name}");
        let (w, bias) = self.weights(&prefix)?;
        let s = Conv3x3 {
            b: shape.b,
            c: c_in,
            o: c_out,
            h: shape.h,
            w: shape.w,
        };
        Ok((prefix, w, bias, s))
    }

    fn weights(&self, prefix: &str) -> Result<(Vec<f32>, Vec<f32>), Error> {
        let get = |n: String| {
            self.get(&n)
                .ok_or(Error::UnknownParam(n.clone()))
                .and_then(values)
        };
        Ok((
            get(format!("{prefix}.weight"))?,
            get(format!("{prefix}.bias"))?,
        ))
    }

    fn fused_train_step(
        &self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut Rng,
    ) -> Result<TrainStep, Error> {
        let rows = self.check_input(images)?.b;
        let labels: Vec<u32> = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        if labels.len() != rows {
            return Err(Error::InputShape {
                expected: vec![rows],
                found: vec![labels.len()],
            });
        }
        let (loss, out, grads) = self.fused_step(images, Objective::CrossEntropy(&labels), rng)?;
        let (logits, rows, classes) = out;
        Ok(TrainStep {
            loss,
            logits: Tensor::from_vec(logits, (rows, classes), self.device())?,
            grads,
        })
    }

    /// The fused forward (up to the objective's tap), loss and backward: the loss, the output
    /// the loss read (values, rows, columns per row) and the gradients.
    #[allow(clippy::type_complexity)]
    fn fused_step(
        &self,
        images: &Tensor,
        objective: Objective,
        rng: &mut Rng,
    ) -> Result<(f64, (Vec<f32>, usize, usize), GradStore), Error> {
        let mut shape = self.check_input(images)?;
        let opts = ConvOptions::default();
        let isa = Isa::default();
        let bn = self.options().batch_norm;
        // acts[i] is the input of layer i, acts[i + 1] its output.
        let mut acts: Vec<Rc<Vec<f32>>> = vec![Rc::new(values(images)?)];
        let mut saved = Vec::new();
        let mut weights: BTreeMap<String, (Vec<f32>, Vec<f32>)> = BTreeMap::new();
        let mut layers = Vec::new();
        let tap = match &objective {
            Objective::Hint { tap, .. } => Some(*tap),
            Objective::CrossEntropy(_) => None,
        };
        'blocks: for b in &self.spec().blocks {
            for l in &b.layers {
                let x = acts.last().expect("the input").clone();
                let t0 = profile::start();
                let (y, s) = match l {
                    LayerSpec::Conv { name, c_in, c_out } => {
                        let (prefix, w, bias, s) =
                            self.conv_layer(b.name(), name, *c_in, *c_out, &shape)?;
                        let (y, bn_saved) = if bn {
                            let z = slices::conv3x3_forward(s, &x, &w, &bias, false, &opts);
                            let hw = shape.h * shape.w;
                            let tb = profile::start();
                            let stats = slices::channel_stats(&z, shape.b, *c_out, hw);
                            let (gamma, beta) = self.weights(&format!("{prefix}.bn"))?;
                            let (a, sh) = slices::batch_norm_affine(&stats, &gamma, &beta, BN_EPS);
                            let y = slices::channel_affine(&z, &a, &sh, *c_out, hw, true);
                            profile::record_as(tb, "batch norm", "forward");
                            let tr = profile::start();
                            self.update_running_stats(
                                &format!("{prefix}.bn"),
                                &stats,
                                shape.b * hw,
                            )?;
                            profile::record_as(tr, "batch norm running stats", "forward");
                            weights.insert(format!("{prefix}.bn"), (gamma, beta));
                            let saved = SavedBn {
                                z,
                                stats,
                                scale: a,
                                shift: sh,
                            };
                            (y, Some(saved))
                        } else {
                            (slices::conv3x3_forward(s, &x, &w, &bias, true, &opts), None)
                        };
                        weights.insert(prefix.clone(), (w, bias));
                        shape.c = *c_out;
                        (
                            y,
                            Saved::Conv {
                                prefix,
                                s,
                                bn: bn_saved,
                            },
                        )
                    }
                    LayerSpec::Pool { .. } => {
                        let planes = shape.b * shape.c;
                        let y = slices::max_pool2x2_forward(&x, planes, shape.h, shape.w, isa);
                        let s = Saved::Pool {
                            planes,
                            h: shape.h,
                            w: shape.w,
                        };
                        shape.h /= 2;
                        shape.w /= 2;
                        (y, s)
                    }
                    LayerSpec::Flatten => {
                        shape = Shape4 {
                            b: shape.b,
                            c: shape.c * shape.h * shape.w,
                            h: 1,
                            w: 1,
                        };
                        acts.push(x);
                        saved.push(Saved::Flatten);
                        layers.push((b.name(), l));
                        continue;
                    }
                    LayerSpec::Dropout { p } => {
                        let mask = dropout_mask(shape.len(), *p, rng);
                        let y = x.iter().zip(&mask).map(|(v, m)| v * m).collect();
                        (y, Saved::Dropout { mask })
                    }
                    LayerSpec::Linear {
                        name,
                        d_in,
                        d_out,
                        relu,
                    } => {
                        let prefix = format!("{}.{name}", b.name());
                        let (w, bias) = self.weights(&prefix)?;
                        let y =
                            slices::linear_forward(&x, &w, &bias, shape.b, *d_in, *d_out, *relu);
                        weights.insert(prefix.clone(), (w, bias));
                        let s = Saved::Linear {
                            prefix,
                            rows: shape.b,
                            d_in: *d_in,
                            d_out: *d_out,
                            relu: *relu,
                        };
                        shape.c = *d_out;
                        (y, s)
                    }
                };
                profile::record(t0, b.name(), l, "forward");
                layers.push((b.name(), l));
                acts.push(Rc::new(y));
                saved.push(s);
                if tap.is_some_and(|t| l.name().is_some_and(|n| t == format!("{}.{n}", b.name()))) {
                    break 'blocks;
                }
            }
            if tap == Some(b.name()) {
                break;
            }
        }
        // The loss's input: [rows, per-row values] (the logits, or the tapped activation).
        let (rows, classes) = (shape.b, shape.len() / shape.b.max(1));
        let out = acts.last().expect("the output").clone();
        let (loss, mut grad) = match objective {
            Objective::CrossEntropy(labels) => cross_entropy_grad(&out, labels, rows, classes)?,
            Objective::Hint { tap, target } => {
                if target.len() != out.len() {
                    return Err(Error::InvalidOption(format!(
                        "hint target for tap `{tap}` has {} values, the student's tap {}",
                        target.len(),
                        out.len()
                    )));
                }
                hint_grad(&out, target)
            }
        };

        let device = self.device().clone();
        let mut grads = GradStore::default();
        let mut put = |name: String, g: Vec<f32>| -> Result<(), Error> {
            let var = self.get(&name).ok_or(Error::UnknownParam(name.clone()))?;
            let t = Tensor::from_vec(g, var.shape(), &device)?;
            grads.insert(var, t);
            Ok(())
        };
        // Whether `grad` already carries the ReLU mask of the layer it is the output gradient
        // of: a layer whose input is a conv's (ReLU) output applies that mask as it writes its
        // input gradient, which spares the conv a masking pass of its own.
        let mut grad_masked = false;
        for (i, s) in saved.iter().enumerate().rev() {
            let need_x = i > 0;
            let (x, y) = (&acts[i], &acts[i + 1]);
            let below_relu = i > 0 && matches!(saved[i - 1], Saved::Conv { .. });
            let t0 = profile::start();
            let masked_in = std::mem::replace(&mut grad_masked, false);
            grad = match s {
                Saved::Conv { prefix, s, bn } => {
                    let (w, _) = &weights[prefix];
                    let mask = (below_relu && need_x).then_some(&x[..]);
                    let gz = match bn {
                        Some(bn) => {
                            let bnp = format!("{prefix}.bn");
                            let (gamma, _) = &weights[&bnp];
                            let tb = profile::start();
                            let (gz, gg, gb) = slices::batch_norm_relu_backward(
                                &bn.z,
                                &bn.stats,
                                gamma,
                                (!masked_in).then_some((&bn.scale[..], &bn.shift[..])),
                                &grad,
                                BN_EPS,
                                s.b,
                                s.o,
                                s.h * s.w,
                            );
                            profile::record_as(tb, "batch norm", "backward");
                            put(format!("{bnp}.weight"), gg)?;
                            put(format!("{bnp}.bias"), gb)?;
                            slices::conv3x3_backward(*s, x, w, &gz, None, mask, need_x, &opts)
                        }
                        None => {
                            let y_relu = (!masked_in).then_some(&y[..]);
                            slices::conv3x3_backward(*s, x, w, &grad, y_relu, mask, need_x, &opts)
                        }
                    };
                    grad_masked = mask.is_some();
                    put(format!("{prefix}.weight"), gz.w)?;
                    put(format!("{prefix}.bias"), gz.b)?;
                    gz.x.unwrap_or_default()
                }
                Saved::Pool { planes, h, w } => {
                    // The gradient of a window goes to its maximum, whose value is the pool's
                    // output: masking the output gradient by `output > 0` masks the input
                    // gradient by the ReLU below.
                    if below_relu && !masked_in {
                        slices::mask_where_positive(&mut grad, y);
                        grad_masked = true;
                    }
                    slices::max_pool2x2_backward(x, &grad, *planes, *h, *w, isa)
                }
                Saved::Flatten => grad,
                Saved::Dropout { mask } => grad.iter().zip(mask).map(|(g, m)| g * m).collect(),
                Saved::Linear {
                    prefix,
                    rows,
                    d_in,
                    d_out,
                    relu,
                } => {
                    let (w, _) = &weights[prefix];
                    let g = slices::linear_backward(
                        x,
                        w,
                        &grad,
                        relu.then_some(&y[..]),
                        *rows,
                        *d_in,
                        *d_out,
                        need_x,
                    );
                    put(format!("{prefix}.weight"), g.w)?;
                    put(format!("{prefix}.bias"), g.b)?;
                    g.x.unwrap_or_default()
                }
            };
            profile::record(t0, layers[i].0, layers[i].1, "backward");
        }
        drop(acts);
        let out = Rc::try_unwrap(out).unwrap_or_else(|rc| (*rc).clone());
        Ok((loss, (out, rows, classes), grads))
    }

    /// Running statistics after a training batch, as the candle path updates them (PyTorch's
    /// rule: momentum 0.1, the unbiased variance).
    fn update_running_stats(
        &self,
        prefix: &str,
        stats: &ChannelStats,
        count: usize,
    ) -> Result<(), Error> {
        let c = stats.mean.len();
        let dev = self.device();
        let m = Tensor::from_vec(
            stats.mean.iter().map(|v| *v as f32).collect::<Vec<_>>(),
            c,
            dev,
        )?;
        let v = Tensor::from_vec(
            stats.var.iter().map(|v| *v as f32).collect::<Vec<_>>(),
            c,
            dev,
        )?;
        self.bn_running_update(prefix, &m, &v, count)
    }

    /// Eval-mode forward pass with taps on the fused path: no graph, no candle ops between the
    /// kernels.
    pub(crate) fn fused_eval(&self, x: &Tensor, taps: &Taps) -> Result<Outputs, Error> {
        let mut shape = self.check_input(x)?;
        let opts = ConvOptions::default();
        let isa = Isa::default();
        let bn = self.options().batch_norm;
        let dev = self.device().clone();
        let mut act = values(x)?;
        let mut out = BTreeMap::new();
        let tensor = |v: &[f32], s: &Shape4, flat: bool| -> Result<Tensor, Error> {
            Ok(if flat {
                Tensor::from_slice(v, (s.b, s.c), &dev)?
            } else {
                Tensor::from_slice(v, (s.b, s.c, s.h, s.w), &dev)?
            })
        };
        let mut flat = false;
        let done = |out: &BTreeMap<String, Tensor>| {
            taps.stop_early
                && !taps.names.is_empty()
                && taps.names.iter().all(|t| out.contains_key(t))
        };
        // Set when a conv ran together with the pool that follows it: the pool is then done.
        let mut pooled = false;
        let blocks = &self.spec().blocks;
        for (bi, b) in blocks.iter().enumerate() {
            for (li, l) in b.layers.iter().enumerate() {
                let t0 = profile::start();
                act = match l {
                    LayerSpec::Conv { name, c_in, c_out } => {
                        let (prefix, w, bias, s) =
                            self.conv_layer(b.name(), name, *c_in, *c_out, &shape)?;
                        shape.c = *c_out;
                        // The next layer, which may open the next block (SVGG5's C11 is one conv,
                        // and K12 starts with the pool).
                        let last = li + 1 == b.layers.len();
                        let next = match b.layers.get(li + 1) {
                            Some(n) => Some(n),
                            None => blocks.get(bi + 1).and_then(|n| n.layers.first()),
                        };
                        // Conv and pool in one pass when no tap reads the conv's own output.
                        let conv_tapped = taps.names.contains(&format!("{}.{name}", b.name()))
                            || (last && taps.names.iter().any(|t| t == b.name()));
                        let fuse_pool =
                            !bn && !conv_tapped && matches!(next, Some(LayerSpec::Pool { .. }));
                        if bn {
                            let z = slices::conv3x3_forward(s, &act, &w, &bias, false, &opts);
                            let (a, sh) = self.bn_eval_affine(&format!("{prefix}.bn"))?;
                            slices::channel_affine(&z, &a, &sh, *c_out, shape.h * shape.w, true)
                        } else if fuse_pool {
                            pooled = true;
                            slices::conv3x3_relu_pool_forward(s, &act, &w, &bias, &opts)
                        } else {
                            slices::conv3x3_forward(s, &act, &w, &bias, true, &opts)
                        }
                    }
                    LayerSpec::Pool { .. } if pooled => {
                        pooled = false;
                        shape.h /= 2;
                        shape.w /= 2;
                        act
                    }
                    LayerSpec::Pool { .. } => {
                        let y = slices::max_pool2x2_forward(
                            &act,
                            shape.b * shape.c,
                            shape.h,
                            shape.w,
                            isa,
                        );
                        shape.h /= 2;
                        shape.w /= 2;
                        y
                    }
                    LayerSpec::Flatten => {
                        shape.c *= shape.h * shape.w;
                        shape.h = 1;
                        shape.w = 1;
                        flat = true;
                        act
                    }
                    LayerSpec::Dropout { .. } => act,
                    LayerSpec::Linear {
                        name,
                        d_in,
                        d_out,
                        relu,
                    } => {
                        let prefix = format!("{}.{name}", b.name());
                        let (w, bias) = self.weights(&prefix)?;
                        shape.c = *d_out;
                        slices::linear_forward(&act, &w, &bias, shape.b, *d_in, *d_out, *relu)
                    }
                };
                profile::record(t0, b.name(), l, "eval");
                if let Some(n) = l.name() {
                    let tap = format!("{}.{}", b.name(), n);
                    if taps.names.contains(&tap) {
                        out.insert(tap, tensor(&act, &shape, flat)?);
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
                out.insert(b.name().to_string(), tensor(&act, &shape, flat)?);
            }
            if done(&out) && !b.kind.is_head() {
                return Ok(Outputs {
                    logits: None,
                    taps: out,
                });
            }
        }
        Ok(Outputs {
            logits: Some(tensor(&act, &shape, true)?),
            taps: out,
        })
    }
}

/// `Σ (s − t)²` and its gradient `2 (s − t)`.
fn hint_grad(s: &[f32], t: &[f32]) -> (f64, Vec<f32>) {
    let mut total = 0f64;
    let grad = s
        .iter()
        .zip(t)
        .map(|(a, b)| {
            let d = a - b;
            total += (d * d) as f64;
            2.0 * d
        })
        .collect();
    (total, grad)
}

/// Batch-mean softmax cross-entropy of `logits` `[rows, classes]` and its gradient.
fn cross_entropy_grad(
    logits: &[f32],
    labels: &[u32],
    rows: usize,
    classes: usize,
) -> Result<(f64, Vec<f32>), Error> {
    let mut grad = vec![0f32; rows * classes];
    let mut total = 0f64;
    let inv_rows = 1.0 / rows.max(1) as f32;
    for r in 0..rows {
        let l = &logits[r * classes..(r + 1) * classes];
        let y = labels[r] as usize;
        if y >= classes {
            return Err(Error::InvalidOption(format!(
                "label {y} of image {r} is not a class index (the model has {classes} classes)"
            )));
        }
        let max = l.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        let sum: f32 = l.iter().map(|v| (v - max).exp()).sum();
        let lse = max + sum.ln();
        total += (lse - l[y]) as f64;
        let g = &mut grad[r * classes..(r + 1) * classes];
        for (k, (gv, v)) in g.iter_mut().zip(l).enumerate() {
            let p = (v - lse).exp();
            *gv = (p - if k == y { 1.0 } else { 0.0 }) * inv_rows;
        }
    }
    Ok((total / rows.max(1) as f64, grad))
}

/// Wall time per layer and direction (`forward` and `backward` of the fused training step,
/// `eval` of the fused eval pass), for `pyramid-bench --profile`: off (one relaxed load per
/// layer) until [`profile::enable`]. A conv run together with its pool holds the pool's time.
pub mod profile {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    use crate::blocks::LayerSpec;

    static ON: AtomicBool = AtomicBool::new(false);
    /// `(layer kind, direction) → (calls, seconds)`.
    pub type Times = BTreeMap<(String, &'static str), (u64, f64)>;

    static TIMES: Mutex<Times> = Mutex::new(BTreeMap::new());

    /// Starts recording (and clears what was recorded).
    pub fn enable() {
        TIMES.lock().expect("profile lock").clear();
        ON.store(true, Ordering::Relaxed);
    }

    /// What was recorded: `(layer kind, direction) → (calls, seconds)`, layer kinds such as
    /// `B3 conv 16→32` (the block gives the map size), and parts of layers in parentheses,
    /// such as `(batch norm)`, whose time is also in their layer's row.
    pub fn take() -> Times {
        ON.store(false, Ordering::Relaxed);
        std::mem::take(&mut *TIMES.lock().expect("profile lock"))
    }

    pub(crate) fn start() -> Option<Instant> {
        ON.load(Ordering::Relaxed).then(Instant::now)
    }

    /// Records a part of a layer under its own name (also counted in the layer's time).
    pub(crate) fn record_as(t0: Option<Instant>, what: &str, dir: &'static str) {
        let Some(t0) = t0 else { return };
        let secs = t0.elapsed().as_secs_f64();
        let mut t = TIMES.lock().expect("profile lock");
        let e = t.entry((format!("({what})"), dir)).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += secs;
    }

    pub(crate) fn record(t0: Option<Instant>, block: &str, l: &LayerSpec, dir: &'static str) {
        let Some(t0) = t0 else { return };
        let secs = t0.elapsed().as_secs_f64();
        let kind = match l {
            LayerSpec::Conv { c_in, c_out, .. } => format!("{block} conv {c_in}→{c_out}"),
            LayerSpec::Pool { .. } => format!("{block} pool"),
            LayerSpec::Flatten => "flatten".into(),
            LayerSpec::Dropout { .. } => "dropout".into(),
            LayerSpec::Linear { d_in, d_out, .. } => format!("{block} linear {d_in}→{d_out}"),
        };
        let mut t = TIMES.lock().expect("profile lock");
        let e = t.entry((kind, dir)).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += secs;
    }
}
