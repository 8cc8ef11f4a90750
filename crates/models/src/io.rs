//! Checkpoints: safetensors files whose metadata holds the model config, so a file alone
//! rebuilds its model; and import of torchvision's VGG19 `.pth` state dict.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use safetensors::tensor::{Dtype, TensorView};

use crate::blocks::BlockKind;
use crate::config::ModelConfig;
use crate::init::{init_values, InitRule};
use crate::model::Model;
use crate::spec::ModelSpec;
use crate::Error;

/// Metadata key holding the JSON `ModelConfig`.
pub const CONFIG_KEY: &str = "pyramid.model_config";
/// Metadata key of the checkpoint format version.
pub const FORMAT_KEY: &str = "pyramid.format";
const FORMAT_VERSION: &str = "1";

fn bad(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn in_file(path: &Path) -> impl FnOnce(Error) -> Error + '_ {
    move |e| Error::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Writes `bytes` to `path` atomically (see `pyramid_fsio::write_atomic`): a crash leaves
/// either the old file or the new one, never a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    Ok(pyramid_fsio::write_atomic(path, bytes)?)
}

impl Model {
    /// Saves every parameter and buffer, with the model config in the metadata.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        self.save_with_metadata(path, &HashMap::new())
    }

    /// Like `save`, with extra metadata entries (e.g. provenance, accuracy).
    pub fn save_with_metadata(
        &self,
        path: impl AsRef<Path>,
        extra: &HashMap<String, String>,
    ) -> Result<(), Error> {
        let path = path.as_ref();
        let tensors = self.snapshot();
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, t)| {
                let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
                let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Ok((n.clone(), t.dims().to_vec(), bytes))
            })
            .collect::<Result<_, Error>>()?;
        let views: Vec<(String, TensorView)> = data
            .iter()
            .map(|(n, shape, bytes)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(|e| {
                    Error::Safetensors {
                        path: path.to_path_buf(),
                        source: e,
                    }
                })?;
                Ok((n.clone(), view))
            })
            .collect::<Result<_, Error>>()?;
        let mut meta = extra.clone();
        meta.insert(
            CONFIG_KEY.to_string(),
            serde_json::to_string(self.config()).expect("configs serialise"),
        );
        meta.insert(FORMAT_KEY.to_string(), FORMAT_VERSION.to_string());
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            source: e,
        })?;
        // Sorted metadata: identical models give byte-identical files.
        write_atomic(path, &pyramid_fsio::canonical_safetensors(bytes))
    }

    /// Rebuilds a model from a file written by `save`. Every parameter of the model must be
    /// present with the right shape; unknown tensors are refused.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let path = path.as_ref();
        let (config, tensors) = read_checkpoint(path)?;
        let spec = ModelSpec::new(config)?;
        let mut tensors: HashMap<String, Tensor> = tensors.into_iter().collect();
        let model = Model::from_fn(spec, device, |p| {
            let t = tensors
                .remove(&p.name)
                .ok_or_else(|| bad(path, format!("missing tensor `{}`", p.name)))?;
            if t.dims() != p.shape.as_slice() {
                return Err(bad(
                    path,
                    format!(
                        "tensor `{}` has shape {:?}, the model needs {:?}",
                        p.name,
                        t.dims(),
                        p.shape
                    ),
                ));
            }
            Ok(t)
        })?;
        if let Some(extra) = tensors.keys().next() {
            return Err(bad(
                path,
                format!("unexpected tensor `{extra}` for model {}", model.id()),
            ));
        }
        Ok(model)
    }

    /// Imports torchvision's `vgg19` state dict (`features.N.weight`/`bias`) into this model's
    /// VGG19 conv layers (those it has), and re-draws FC3 with PyTorch's default init, as the
    /// original did when it replaced torchvision's classifier (docs/method.md §2.2, §13 B11).
    /// For a 1-channel model, conv1_1's RGB filters are summed over the colour axis.
    /// Returns the names of the imported parameters.
    pub fn import_torchvision_vgg19(
        &self,
        path: impl AsRef<Path>,
        seed: u64,
    ) -> Result<Vec<String>, Error> {
        let path = path.as_ref();
        if self.options().width_div != 1 {
            return Err(bad(
                path,
                format!(
                    "ImageNet weights need full width (width_div = 1), this model has width_div = {}",
                    self.options().width_div
                ),
            ));
        }
        let tensors =
            candle_core::pickle::read_all(path).map_err(|e| in_file(path)(Error::Candle(e)))?;
        let tensors: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("module.").unwrap_or(&k).to_string(), v))
            .collect();
        if tensors.contains_key("features.1.running_mean") {
            return Err(bad(
                path,
                "this is a batch-norm VGG19 (vgg19_bn); expected torchvision's plain vgg19",
            ));
        }
        let mut imported = Vec::new();
        for (idx, (block, conv)) in TORCHVISION_VGG19_CONVS.iter().enumerate() {
            let fidx = TORCHVISION_FEATURE_INDEX[idx];
            for leaf in ["weight", "bias"] {
                let ours = format!("{}.{conv}.{leaf}", block.name());
                if self.get(&ours).is_none() {
                    continue;
                }
                let key = format!("features.{fidx}.{leaf}");
                let mut t = tensors
                    .get(&key)
                    .ok_or_else(|| bad(path, format!("missing `{key}` (for `{ours}`)")))?
                    .to_dtype(candle_core::DType::F32)?;
                if leaf == "weight" && *conv == "conv1_1" && self.options().in_channels == 1 {
                    t = t.sum_keepdim(1)?;
                }
                self.set(&ours, &t).map_err(in_file(path))?;
                imported.push(ours);
            }
        }
        for p in self.spec().params() {
            if p.block == BlockKind::Fc3 {
                let v = init_values(&p, InitRule::PytorchDefault, seed);
                self.set(
                    &p.name,
                    &Tensor::from_vec(v, p.shape.as_slice(), self.device())?,
                )?;
            }
        }
        Ok(imported)
    }
}

/// Our names of VGG19's 16 convs, in torchvision's order.
pub const TORCHVISION_VGG19_CONVS: [(BlockKind, &str); 16] = [
    (BlockKind::C11, "conv1_1"),
    (BlockKind::B1, "conv1_2"),
    (BlockKind::B2, "conv2_1"),
    (BlockKind::B2, "conv2_2"),
    (BlockKind::B3, "conv3_1"),
    (BlockKind::B3, "conv3_2"),
    (BlockKind::B3, "conv3_3"),
    (BlockKind::B3, "conv3_4"),
    (BlockKind::B4, "conv4_1"),
    (BlockKind::B4, "conv4_2"),
    (BlockKind::B4, "conv4_3"),
    (BlockKind::B4, "conv4_4"),
    (BlockKind::B5, "conv5_1"),
    (BlockKind::B5, "conv5_2"),
    (BlockKind::B5, "conv5_3"),
    (BlockKind::B5, "conv5_4"),
];

/// torchvision `vgg19().features` module index of each conv (docs/method.md §2.1).
pub const TORCHVISION_FEATURE_INDEX: [usize; 16] =
    [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34];

/// Reads a checkpoint's config and tensors without building the model.
pub fn read_checkpoint(path: &Path) -> Result<(ModelConfig, Vec<(String, Tensor)>), Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    let not_safetensors = |e| Error::Safetensors {
        path: path.to_path_buf(),
        source: e,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(not_safetensors)?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(not_safetensors)?;
    let config_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY))
        .ok_or_else(|| {
            bad(
                path,
                format!("no `{CONFIG_KEY}` in the metadata: not a pyramid checkpoint"),
            )
        })?;
    let config: ModelConfig = serde_json::from_str(config_json).map_err(|e| Error::Metadata {
        path: path.to_path_buf(),
        key: CONFIG_KEY,
        source: e,
    })?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(
                path,
                format!("tensor `{name}` is {:?}, expected F32", view.dtype()),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.push((name, Tensor::from_vec(data, view.shape(), &Device::Cpu)?));
    }
    Ok((config, tensors))
}
