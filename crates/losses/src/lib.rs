//! Distillation losses for the pyramid (docs/method.md §0, §5, §7): pure, differentiable functions
//! over candle tensors, and `LossSpec`, the serialisable description of a stage's loss.

#![warn(missing_docs)]

mod error;
pub mod functional;
mod spec;

pub use error::{LossError, Result};
pub use functional::{
    attention_map, attention_transfer, cross_entropy, dkd, gram, gram_loss, kd_kl, log_softmax,
    logit_mse, mse_sum,
};
pub use spec::{LossInputs, LossSpec, Monitor, Output, Reads, Reduction, Weighted};
