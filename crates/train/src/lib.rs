//! Training toolkit for the pyramid (docs/method.md §8, §9): optimisers, learning-rate schedules
//! (including the original ReduceLROnPlateau stop/reload rules), metrics logging and
//! crash-safe file writes. Everything a resume needs is serialisable.

#![warn(missing_docs)]

mod error;
pub mod fsio;
pub mod metrics;
pub mod optim;
pub mod schedule;

pub use error::{Result, TrainError};
