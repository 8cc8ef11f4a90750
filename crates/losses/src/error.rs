use candle_core::Shape;

/// Errors of the loss functions.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A candle tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Two tensors that must agree in shape do not.
    #[error("{op}: shape mismatch between {a:?} and {b:?}")]
    ShapeMismatch {
        /// The loss function that compared them.
        op: &'static str,
        /// Shape of the first tensor (the student's).
        a: Shape,
        /// Shape of the second tensor (the teacher's).
        b: Shape,
    },

    /// A tensor has the wrong rank or an otherwise unusable shape.
    #[error("{op}: {what} has shape {shape:?}, expected {expected}")]
    BadShape {
        /// The loss function that rejected it.
        op: &'static str,
        /// Which argument, e.g. `"logits"`.
        what: &'static str,
        /// The shape it had.
        shape: Shape,
        /// The shape it needs, in words, e.g. `"[B, n]"`.
        expected: &'static str,
    },

    /// Gram upsampling (docs/method.md §5.1) only handles integer nearest-neighbour factors.
    #[error(
        "gram: cannot upsample F2 from {from_h}x{from_w} to F1's {to_h}x{to_w} by an integer factor"
    )]
    NonIntegerUpsample {
        /// F2's height, pixels.
        from_h: usize,
        /// F2's width, pixels.
        from_w: usize,
        /// F1's height, pixels (the target).
        to_h: usize,
        /// F1's width, pixels (the target).
        to_w: usize,
    },

    /// A `LossSpec` was evaluated without one of the tensors it consumes.
    #[error("loss `{loss}` needs input `{input}`, which was not provided")]
    MissingInput {
        /// The loss that needs it, e.g. `"kd"`.
        loss: &'static str,
        /// The missing `LossInputs` field, e.g. `"labels"`.
        input: &'static str,
    },

    /// Student and teacher Gram pair lists differ in length (or are empty).
    #[error("gram: {student} student pair(s) vs {teacher} teacher pair(s)")]
    GramPairCount {
        /// Number of student (F1, F2) pairs.
        student: usize,
        /// Number of teacher (F1, F2) pairs.
        teacher: usize,
    },

    /// A `LossSpec` hyper-parameter is out of range.
    #[error("invalid loss spec: {0}")]
    InvalidSpec(String),
}

/// The result of a loss computation.
pub type Result<T> = std::result::Result<T, LossError>;
