//! The paper's own numbers, typed in: the test accuracies (%) of its Tables 1–4 (STL10 and
//! CIFAR-100 at 96×96, forward and backward scheme, best epoch) and the inference times of its
//! Figure 3. `pyramid table --paper` shows them beside measured ones.

use pyramid_models::Scheme;

/// The registry names of the paper's five method columns, in its order: Scratch,
/// Pyramid 2-stages, Pyramid Gram, FitNet, Gram Direct.
pub const METHODS: [&str; 5] = [
    "scratch",
    "pyramid",
    "pyramid-gram",
    "fitnet",
    "gram-direct",
];

/// One of the paper's Tables 1–4.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperTable {
    /// The table's number in the paper (1–4).
    pub number: u8,
    /// The data set, as `Results::dataset` names it (`stl10`, `cifar100`).
    pub dataset: &'static str,
    /// Forward (Tables 1, 2) or backward (Tables 3, 4).
    pub scheme: Scheme,
    /// The teacher's accuracy (only Tables 1 and 2 print a VGG19 row).
    pub teacher: Option<f64>,
    /// Per level 1–5 (SVGG17 … SVGG5, or their B variants), the accuracy of each method of
    /// [`METHODS`]; `None` where the paper prints "–".
    pub levels: [[Option<f64>; 5]; 5],
}

/// What the paper says about one cell of ours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PaperCell {
    /// The paper's accuracy (%).
    Value(f64),
    /// The paper's table has the method but prints "–" for this level.
    Dash,
    /// The paper has no table for this data set and scheme.
    NoTable,
    /// The paper's tables have no column for this method.
    NoMethod,
}

const fn v(x: f64) -> Option<f64> {
    Some(x)
}

/// The paper's Tables 1–4. Where the paper prints "(=pyramid)" (forward SVGG17 under
/// Pyramid Gram and Gram Direct: both chains start from the Pyramid 2-stages SVGG17), the
/// Pyramid 2-stages value is repeated. Three cells are the table's rounding of the
/// spreadsheet's value (Table 1 SVGG5 Scratch 73.7625 → 73.76 and FitNet 84.9375 → 84.93,
/// Table 3 SVGG14B Scratch 72.9125 → 72.912): the table's is typed in.
pub const TABLES: [PaperTable; 4] = [
    PaperTable {
        number: 1,
        dataset: "stl10",
        scheme: Scheme::Forward,
        teacher: v(94.175),
        levels: [
            [v(93.925), v(93.925), v(93.925), v(91.3375), v(93.925)],
            [v(92.2875), v(93.8625), v(93.775), v(92.025), v(93.7875)],
            [v(89.95), v(91.5875), v(92.5125), v(90.1), v(92.0375)],
            [v(82.9125), v(88.05), v(90.125), v(85.7125), v(88.9125)],
            [v(73.76), v(84.375), v(87.0625), v(84.93), v(76.3125)],
        ],
    },
    PaperTable {
        number: 2,
        dataset: "cifar100",
        scheme: Scheme::Forward,
        teacher: v(80.66),
        levels: [
            [v(80.61), v(80.98), v(80.98), v(75.61), v(80.98)],
            [v(80.12), v(79.86), v(80.16), v(77.89), v(79.47)],
            [v(75.11), v(75.15), v(78.47), v(75.39), v(76.23)],
            [v(68.92), v(72.68), v(74.71), v(70.32), v(74.56)],
            [v(61.24), v(69.72), v(72.18), v(70.31), v(67.67)],
        ],
    },
    PaperTable {
        number: 3,
        dataset: "stl10",
        scheme: Scheme::Backward,
        teacher: None,
        levels: [
            [v(81.25), v(93.35), v(91.9125), v(90.475), v(82.3625)],
            [v(72.912), v(91.95), v(90.075), v(89.1), v(68.925)],
            [v(72.15), v(90.9375), v(87.925), v(87.25), v(69.2375)],
            [v(72.0), v(90.85), v(90.125), v(89.1), v(69.5125)],
            [v(72.8), v(91.0125), None, v(85.8375), None],
        ],
    },
    PaperTable {
        number: 4,
        dataset: "cifar100",
        scheme: Scheme::Backward,
        teacher: None,
        levels: [
            [v(68.96), v(80.24), v(78.95), v(76.65), v(76.37)],
            [v(63.89), v(78.98), v(77.78), v(76.48), v(65.42)],
            [v(63.16), v(76.18), v(74.28), v(75.57), v(65.71)],
            [v(60.18), v(74.69), v(74.27), v(73.42), v(71.4)],
            [v(61.56), v(74.71), None, v(69.41), None],
        ],
    },
];

/// The paper's table for a data set and scheme, if it has one.
pub fn table(dataset: &str, scheme: Scheme) -> Option<&'static PaperTable> {
    TABLES
        .iter()
        .find(|t| t.dataset == dataset && t.scheme == scheme)
}

/// The paper's VGG19 teacher accuracy on a data set (printed in its Tables 1 and 2; the
/// backward tables share the teacher).
pub fn teacher(dataset: &str) -> Option<f64> {
    TABLES
        .iter()
        .find(|t| t.dataset == dataset)
        .and_then(|t| t.teacher)
}

/// The paper's accuracy of `method` at `level` (1–5) of `scheme` on `dataset`.
pub fn cell(dataset: &str, scheme: Scheme, level: usize, method: &str) -> PaperCell {
    let Some(t) = table(dataset, scheme) else {
        return PaperCell::NoTable;
    };
    let Some(m) = METHODS.iter().position(|&x| x == method) else {
        return PaperCell::NoMethod;
    };
    match level
        .checked_sub(1)
        .and_then(|i| t.levels.get(i))
        .and_then(|row| row[m])
    {
        Some(x) => PaperCell::Value(x),
        None => PaperCell::Dash,
    }
}

/// One point of the paper's Figure 3: seconds to classify 13,000 96×96 images (STL10's train
/// and test images) with a model, against its number of layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure3Point {
    /// The x axis, "Number of layers" (19 for VGG19).
    pub layers: u32,
    /// The model, as `ModelId::name()` writes it.
    pub model: &'static str,
    /// Seconds to classify the 13,000 images.
    pub seconds: f64,
}

const fn p(layers: u32, model: &'static str, seconds: f64) -> Figure3Point {
    Figure3Point {
        layers,
        model,
        seconds,
    }
}

/// The paper's Figure 3, forward models (the plot's coordinates). The paper names neither the
/// GPU nor the batch size.
pub const FIGURE3_FORWARD: [Figure3Point; 6] = [
    p(5, "SVGG5", 4.43),
    p(8, "SVGG8", 7.74),
    p(11, "SVGG11", 11.32),
    p(14, "SVGG14", 14.89),
    p(17, "SVGG17", 16.14),
    p(19, "VGG19", 17.89),
];

/// The paper's Figure 3, backward models (faster at the middle levels: the early
/// high-resolution convolutions dominate the cost, and the backward scheme compresses them
/// first).
pub const FIGURE3_BACKWARD: [Figure3Point; 6] = [
    p(5, "SVGG5B", 4.47),
    p(8, "SVGG8B", 4.62),
    p(11, "SVGG11B", 5.92),
    p(14, "SVGG14B", 8.80),
    p(17, "SVGG17B", 13.89),
    p(19, "VGG19", 17.89),
];

/// The paper's Figure-3 seconds per 13,000 images for a model (`VGG19`, `SVGG8`, `SVGG8B`, …).
pub fn figure3_seconds(model: &str) -> Option<f64> {
    FIGURE3_FORWARD
        .iter()
        .chain(&FIGURE3_BACKWARD)
        .find(|p| p.model == model)
        .map(|p| p.seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_follow_the_papers_layout() {
        assert_eq!(
            cell("stl10", Scheme::Backward, 5, "pyramid"),
            PaperCell::Value(91.0125)
        );
        assert_eq!(
            cell("cifar100", Scheme::Forward, 4, "gram-direct"),
            PaperCell::Value(74.56)
        );
        assert_eq!(
            cell("cifar100", Scheme::Backward, 5, "pyramid-gram"),
            PaperCell::Dash
        );
        assert_eq!(cell("stl10", Scheme::Forward, 1, "kd"), PaperCell::NoMethod);
        assert_eq!(
            cell("fashion-mnist", Scheme::Forward, 1, "pyramid"),
            PaperCell::NoTable
        );
        assert_eq!(teacher("cifar100"), Some(80.66));
        assert_eq!(figure3_seconds("SVGG5B"), Some(4.47));
        // "4x faster": VGG19 / SVGG5.
        assert!((17.89 / figure3_seconds("SVGG5").unwrap() - 4.04).abs() < 0.005);
    }
}
