//! A model's structure without weights: blocks, roles, layers, shapes and counts.
//! Enough for `pyramid inspect`, and the blueprint `Model` is built from.

use serde::Serialize;

use crate::blocks::{BlockKind, LayerSpec};
use crate::config::{ModelConfig, ModelId, ModelOptions};
use crate::plan::{architecture, step_of, Role};
use crate::Error;

/// One block of a model, with its role and layers.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpec {
    /// Which block.
    pub kind: BlockKind,
    /// Its role in this model (inherited, compressed, frozen or head).
    pub role: Role,
    /// Its layers in forward order, at the model's options.
    pub layers: Vec<LayerSpec>,
}

impl BlockSpec {
    /// The block's name, e.g. `B3` (the prefix of its parameter names).
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

/// A parameter of the model: its full name and shape (PyTorch layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamSpec {
    /// Full name, `<block>.<layer>.<weight|bias|...>`, e.g. `B3.conv3_1.weight`.
    pub name: String,
    /// Shape in PyTorch layout: conv `[c_out, c_in, 3, 3]`, linear `[d_out, d_in]`, bias `[c]`.
    pub shape: Vec<usize>,
    /// The block it belongs to.
    pub block: BlockKind,
    /// Running statistics of batch norm are buffers, not trained parameters.
    pub is_buffer: bool,
    /// The layer the parameter belongs to.
    pub layer: ParamLayer,
    /// fan_in / fan_out of that layer (for initialisation; a bias shares its weight's fans).
    pub fan_in: usize,
    /// Fan-out of the same layer (`c_out`·9 for a conv, `d_out` for a linear layer).
    pub fan_out: usize,
}

/// The kind of layer a parameter belongs to (decides its initialisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamLayer {
    /// A 3×3 convolution.
    Conv,
    /// A fully connected layer.
    Linear,
    /// A batch norm after a convolution.
    BatchNorm,
}

impl ParamSpec {
    /// Number of elements (product of the shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The structure of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Which model, with its options.
    pub config: ModelConfig,
    /// Its blocks in forward order.
    pub blocks: Vec<BlockSpec>,
}

/// Per-block summary for reports and `pyramid inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockSummary {
    /// Block name, e.g. `K12`.
    pub name: String,
    /// Its role in the model.
    pub role: Role,
    /// Per-sample output shape (C, H, W) or (n,) for the head.
    pub out_shape: Vec<usize>,
    /// Trainable parameters of the block.
    pub params: usize,
    /// Multiply-accumulates of the block for one image.
    pub macs: u64,
}

impl ModelSpec {
    /// The structure of `config`, after validating its options.
    pub fn new(config: ModelConfig) -> Result<Self, Error> {
        config.options.validate()?;
        let blocks = architecture(config.model)
            .into_iter()
            .map(|(kind, role)| BlockSpec {
                kind,
                role,
                layers: kind.layers(&config.options),
            })
            .collect();
        Ok(Self { config, blocks })
    }

    /// The structure of `model` at `options`.
    pub fn of(model: ModelId, options: ModelOptions) -> Result<Self, Error> {
        Self::new(ModelConfig::new(model, options))
    }

    /// Which model.
    pub fn id(&self) -> ModelId {
        self.config.model
    }

    /// The model's options.
    pub fn options(&self) -> &ModelOptions {
        &self.config.options
    }

    /// The block of kind `kind`, if the model has one.
    pub fn block(&self, kind: BlockKind) -> Option<&BlockSpec> {
        self.blocks.iter().find(|b| b.kind == kind)
    }

    /// The compressed block (None for VGG19).
    pub fn compressed_block(&self) -> Option<BlockKind> {
        step_of(self.id()).map(|s| s.with)
    }

    /// Every parameter and buffer, in forward order.
    pub fn params(&self) -> Vec<ParamSpec> {
        let bn = self.options().batch_norm;
        let mut out = Vec::new();
        for b in &self.blocks {
            for l in &b.layers {
                let mut push = |suffix: &str,
                                shape: Vec<usize>,
                                is_buffer: bool,
                                layer: ParamLayer,
                                (fan_in, fan_out): (usize, usize)| {
                    out.push(ParamSpec {
                        name: format!("{}.{}", b.name(), suffix),
                        shape,
                        block: b.kind,
                        is_buffer,
                        layer,
                        fan_in,
                        fan_out,
                    })
                };
                match l {
                    LayerSpec::Conv { name, c_in, c_out } => {
                        let fans = (c_in * 9, c_out * 9);
                        let conv = ParamLayer::Conv;
                        push(
                            &format!("{name}.weight"),
                            vec![*c_out, *c_in, 3, 3],
                            false,
                            conv,
                            fans,
                        );
                        push(&format!("{name}.bias"), vec![*c_out], false, conv, fans);
                        if bn {
                            let bn = ParamLayer::BatchNorm;
                            let fans = (*c_out, *c_out);
                            push(&format!("{name}.bn.weight"), vec![*c_out], false, bn, fans);
                            push(&format!("{name}.bn.bias"), vec![*c_out], false, bn, fans);
                            push(
                                &format!("{name}.bn.running_mean"),
                                vec![*c_out],
                                true,
                                bn,
                                fans,
                            );
                            push(
                                &format!("{name}.bn.running_var"),
                                vec![*c_out],
                                true,
                                bn,
                                fans,
                            );
                        }
                    }
                    LayerSpec::Linear {
                        name, d_in, d_out, ..
                    } => {
                        let lin = ParamLayer::Linear;
                        let fans = (*d_in, *d_out);
                        push(
                            &format!("{name}.weight"),
                            vec![*d_out, *d_in],
                            false,
                            lin,
                            fans,
                        );
                        push(&format!("{name}.bias"), vec![*d_out], false, lin, fans);
                    }
                    LayerSpec::Pool { .. } | LayerSpec::Flatten | LayerSpec::Dropout { .. } => {}
                }
            }
        }
        out
    }

    /// Number of trainable parameters (buffers excluded).
    pub fn num_params(&self) -> usize {
        self.params()
            .iter()
            .filter(|p| !p.is_buffer)
            .map(ParamSpec::numel)
            .sum()
    }

    /// Number of 3×3 convolutions.
    pub fn conv_count(&self) -> usize {
        self.layers()
            .filter(|l| matches!(l, LayerSpec::Conv { .. }))
            .count()
    }

    /// Number of fully connected layers.
    pub fn fc_count(&self) -> usize {
        self.layers()
            .filter(|l| matches!(l, LayerSpec::Linear { .. }))
            .count()
    }

    fn layers(&self) -> impl Iterator<Item = &LayerSpec> {
        self.blocks.iter().flat_map(|b| b.layers.iter())
    }

    /// Per-block output shapes, parameters and multiply-accumulates for one image.
    pub fn summaries(&self) -> Vec<BlockSummary> {
        let o = self.options();
        let mut shape = vec![o.in_channels, o.input_size, o.input_size];
        let params = self.params();
        self.blocks
            .iter()
            .map(|b| {
                let mut macs = 0u64;
                for l in &b.layers {
                    match l {
                        LayerSpec::Conv { c_in, c_out, .. } => {
                            let (h, w) = (shape[1], shape[2]);
                            macs += (h * w * c_out * c_in * 9) as u64;
                            shape = vec![*c_out, h, w];
                        }
                        LayerSpec::Pool { .. } => {
                            shape = vec![shape[0], shape[1] / 2, shape[2] / 2]
                        }
                        LayerSpec::Flatten => shape = vec![shape.iter().product()],
                        LayerSpec::Dropout { .. } => {}
                        LayerSpec::Linear { d_in, d_out, .. } => {
                            macs += (d_in * d_out) as u64;
                            shape = vec![*d_out];
                        }
                    }
                }
                BlockSummary {
                    name: b.name().to_string(),
                    role: b.role,
                    out_shape: shape.clone(),
                    params: params
                        .iter()
                        .filter(|p| p.block == b.kind && !p.is_buffer)
                        .map(ParamSpec::numel)
                        .sum(),
                    macs,
                }
            })
            .collect()
    }

    /// Multiply-accumulates per image (convs and linear layers).
    pub fn macs(&self) -> u64 {
        self.summaries().iter().map(|b| b.macs).sum()
    }

    /// Per-sample output shape of a block (the stage-1 matched shape when it is C or D).
    pub fn block_out_shape(&self, kind: BlockKind) -> Option<Vec<usize>> {
        self.summaries()
            .into_iter()
            .find(|s| s.name == kind.name())
            .map(|s| s.out_shape)
    }

    /// Per-sample output shape of every tap, in forward order: each named layer
    /// (`B4.conv4_2`, `K12.pool_in`) and each block (`B4`, `FC1` = logits).
    pub fn tap_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let o = self.options();
        let mut shape = vec![o.in_channels, o.input_size, o.input_size];
        let mut out = Vec::new();
        for b in &self.blocks {
            for l in &b.layers {
                shape = match l {
                    LayerSpec::Conv { c_out, .. } => vec![*c_out, shape[1], shape[2]],
                    LayerSpec::Pool { .. } => vec![shape[0], shape[1] / 2, shape[2] / 2],
                    LayerSpec::Flatten => vec![shape.iter().product()],
                    LayerSpec::Dropout { .. } => shape,
                    LayerSpec::Linear { d_out, .. } => vec![*d_out],
                };
                if let Some(n) = l.name() {
                    out.push((format!("{}.{n}", b.name()), shape.clone()));
                }
            }
            out.push((b.name().to_string(), shape.clone()));
        }
        out
    }

    /// Per-sample output shape of a tap (block or layer name), if the model has it.
    pub fn tap_shape(&self, tap: &str) -> Option<Vec<usize>> {
        self.tap_shapes()
            .into_iter()
            .find(|(n, _)| n == tap)
            .map(|(_, s)| s)
    }

    /// Names of the trainable parameters computed at or before `tap` (a block: all of it; a
    /// layer: its block's layers up to and including it), in forward order. These are the
    /// parameters a loss on that tap can reach.
    pub fn params_up_to(&self, tap: &str) -> Result<Vec<String>, Error> {
        let mut layer_prefixes = Vec::new();
        let mut found = false;
        'blocks: for b in &self.blocks {
            for l in &b.layers {
                if let Some(n) = l.name() {
                    let full = format!("{}.{n}", b.name());
                    layer_prefixes.push(format!("{full}."));
                    if full == tap {
                        found = true;
                        break 'blocks;
                    }
                }
            }
            if b.name() == tap {
                found = true;
                break;
            }
        }
        if !found {
            return Err(Error::UnknownTap(format!("{tap} (model {})", self.id())));
        }
        Ok(self
            .params()
            .into_iter()
            .filter(|p| !p.is_buffer && layer_prefixes.iter().any(|x| p.name.starts_with(x)))
            .map(|p| p.name)
            .collect())
    }

    /// The tap of a block's last convolution, before its pool (`B5.conv5_4`, `K5.conv`): the
    /// second map of a Gram pair (docs/method.md §5.2). None for blocks without a convolution.
    pub fn last_conv_tap(&self, block: BlockKind) -> Option<String> {
        let b = self.block(block)?;
        b.layers.iter().rev().find_map(|l| match l {
            LayerSpec::Conv { name, .. } => Some(format!("{}.{name}", b.name())),
            _ => None,
        })
    }

    /// The block right before `block` in this model (whose output is `block`'s input).
    pub fn block_before(&self, block: BlockKind) -> Option<BlockKind> {
        let i = self.blocks.iter().position(|b| b.kind == block)?;
        i.checked_sub(1).map(|j| self.blocks[j].kind)
    }

    /// A JSON-friendly summary (`pyramid inspect --json`).
    pub fn report(&self) -> ModelReport {
        ModelReport {
            model: self.id().name(),
            scheme: self.id().scheme.as_str().to_string(),
            level: self.id().level,
            options: self.options().clone(),
            params: self.num_params(),
            convs: self.conv_count(),
            fcs: self.fc_count(),
            macs: self.macs(),
            compressed: self.compressed_block().map(|b| b.name().to_string()),
            blocks: self.summaries(),
        }
    }
}

/// What `pyramid inspect --json` prints for one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// Paper name, e.g. `SVGG14B`.
    pub model: String,
    /// `forward` or `backward`.
    pub scheme: String,
    /// Pyramid level, 0 (VGG19) to 5.
    pub level: usize,
    /// The options the structure was built with.
    pub options: ModelOptions,
    /// Trainable parameters.
    pub params: usize,
    /// Number of convolutions.
    pub convs: usize,
    /// Number of fully connected layers.
    pub fcs: usize,
    /// Multiply-accumulates per image.
    pub macs: u64,
    /// Name of the compressed block; `None` for VGG19.
    pub compressed: Option<String>,
    /// Per-block summaries in forward order.
    pub blocks: Vec<BlockSummary>,
}
