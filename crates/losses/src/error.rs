use candle_core::Shape;

/// Errors of the loss functions.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Two tensors that must agree in shape do not.
    #[error("{op}: shape mismatch between {a:?} and {b:?}")]
    ShapeMismatch {
        op: &'static str,
        a: Shape,
        b: Shape,
    },

    /// A tensor has the wrong rank or an otherwise unusable shape.
    #[error("{op}: {what} has shape {shape:?}, expected {expected}")]
    BadShape {
        op: &'static str,
        what: &'static str,
        shape: Shape,
        expected: &'static str,
    },

    /// Gram upsampling (docs/method.md §5.1) only handles integer nearest-neighbour factors.
    #[error(
        "gram: cannot upsample F2 from {from_h}x{from_w} to F1's {to_h}x{to_w} by an integer factor"
    )]
    NonIntegerUpsample {
        from_h: usize,
        from_w: usize,
        to_h: usize,
        to_w: usize,
    },

    /// A `LossSpec` was evaluated without one of the tensors it consumes.
    #[error("loss `{loss}` needs input `{input}`, which was not provided")]
    MissingInput {
        loss: &'static str,
        input: &'static str,
    },

    /// Student and teacher Gram pair lists differ in length (or are empty).
    #[error("gram: {student} student pair(s) vs {teacher} teacher pair(s)")]
    GramPairCount { student: usize, teacher: usize },

    /// A `LossSpec` hyper-parameter is out of range.
    #[error("invalid loss spec: {0}")]
    InvalidSpec(String),
}

pub type Result<T> = std::result::Result<T, LossError>;
