//! FitNet regressors (docs/method.md §6): a small adapter that maps a student's guided layer to the
//! shape of the teacher's hint. It exists only during a FitNet hint stage and is never part of
//! a checkpoint.

use candle_core::{DType, Device, Tensor, Var};
use pyramid_ops::Backend;
use pyramid_rng::Rng;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The adapter's layers, applied in this order: an optional 2×2 max-pool, an optional 3×3 conv
/// (padding 1, with bias, **no** ReLU), an optional nearest-neighbour ×2 upsample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterSpec {
    /// Whether a 2×2 max-pool (stride 2) comes first, halving height and width.
    pub pool: bool,
    /// `(c_in, c_out)` of the convolution.
    pub conv: Option<(usize, usize)>,
    /// Whether a nearest-neighbour ×2 upsample comes last, doubling height and width.
    pub upsample: bool,
}

impl AdapterSpec {
    /// True when the adapter does nothing (the guided layer already has the hint's shape).
    pub fn is_identity(&self) -> bool {
        !self.pool && self.conv.is_none() && !self.upsample
    }

    /// Trainable parameters (docs/method.md §14 item 9: 1,180,160 for conv 256→512).
    pub fn num_params(&self) -> usize {
        self.conv.map_or(0, |(i, o)| 9 * i * o + o)
    }

    /// Per-sample output shape for a `[C, H, W]` input, or None when the input does not fit.
    pub fn out_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let [mut c, mut h, mut w] = <[usize; 3]>::try_from(input).ok()?;
        if self.pool {
            (h, w) = (h / 2, w / 2);
        }
        if let Some((i, o)) = self.conv {
            if i != c {
                return None;
            }
            c = o;
        }
        if self.upsample {
            (h, w) = (h * 2, w * 2);
        }
        Some(vec![c, h, w])
    }

    /// E.g. `pool, conv(256→512)`, or `identity`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.pool {
            parts.push("pool".to_string());
        }
        if let Some((i, o)) = self.conv {
            parts.push(format!("conv({i}→{o}, no ReLU)"));
        }
        if self.upsample {
            parts.push("upsample×2".to_string());
        }
        if parts.is_empty() {
            "identity".into()
        } else {
            parts.join(", ")
        }
    }
}

/// An adapter with weights (PyTorch's default init, U(±1/√fan_in), docs/method.md §2.3).
pub struct Adapter {
    spec: AdapterSpec,
    conv: Option<(Var, Var)>,
    backend: Backend,
}

impl Adapter {
    /// Parameter name of the conv weight `[c_out, c_in, 3, 3]` (trained, never part of a model
    /// checkpoint).
    pub const WEIGHT: &'static str = "regressor.conv.weight";
    /// Parameter name of the conv bias `[c_out]`.
    pub const BIAS: &'static str = "regressor.conv.bias";

    /// Builds the adapter, its conv initialised from the `init/<name>` streams of `seed`.
    pub fn new(spec: AdapterSpec, seed: u64, device: &Device) -> Result<Self, Error> {
        let conv = match spec.conv {
            None => None,
            Some((c_in, c_out)) => {
                let bound = 1.0 / ((c_in * 9) as f64).sqrt();
                let var = |name: &str, shape: &[usize]| -> Result<Var, Error> {
                    let n = shape.iter().product();
                    let v =
                        Rng::stream(seed, &format!("init/{name}")).uniform_vec(n, -bound, bound);
                    let t = Tensor::from_vec(v, shape, device)?.to_dtype(DType::F32)?;
                    Ok(Var::from_tensor(&t)?)
                };
                Some((
                    var(Self::WEIGHT, &[c_out, c_in, 3, 3])?,
                    var(Self::BIAS, &[c_out])?,
                ))
            }
        };
        Ok(Self {
            spec,
            conv,
            backend: Backend::default(),
        })
    }

    /// What the adapter does.
    pub fn spec(&self) -> &AdapterSpec {
        &self.spec
    }

    /// The trainable parameters (empty without a convolution).
    pub fn params(&self) -> Vec<(String, Var)> {
        self.conv
            .iter()
            .flat_map(|(w, b)| {
                [
                    (Self::WEIGHT.to_string(), w.clone()),
                    (Self::BIAS.to_string(), b.clone()),
                ]
            })
            .collect()
    }

    /// Applies the adapter; `train = false` records no graph.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, Error> {
        let mut x = x.clone();
        if self.spec.pool {
            x = pyramid_ops::max_pool2x2(&x, self.backend)?;
        }
        if let Some((w, b)) = &self.conv {
            let (w, b) = if train {
                (w.as_tensor().clone(), b.as_tensor().clone())
            } else {
                (w.as_tensor().detach(), b.as_tensor().detach())
            };
            x = pyramid_ops::conv2d(&x, &w, Some(&b), 1, 1, self.backend)?;
        }
        if self.spec.upsample {
            let (_, _, h, w) = x.dims4()?;
            x = x.upsample_nearest2d(h * 2, w * 2)?;
        }
        Ok(x)
    }
}
