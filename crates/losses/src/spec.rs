//! `LossSpec`: the loss of one training stage, chosen in configuration.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{LossError, Result};
use crate::functional as f;

/// The tensors a stage produces for its loss. Fill in what the stage's `LossSpec` needs
/// (see `LossSpec::needs_*`); teacher tensors are detached by `LossSpec::evaluate`
/// (teachers never receive gradients, docs/method.md §7.2).
#[derive(Debug, Clone, Copy, Default)]
pub struct LossInputs<'a> {
    /// Student's matched feature tensor: output of the compressed block C (docs/method.md §3.3/§4.3)
    /// or the FitNet regressor output (§6).
    pub student_features: Option<&'a Tensor>,
    /// Teacher's matched feature tensor: output of the replaced block D, or the FitNet hint.
    pub teacher_features: Option<&'a Tensor>,
    /// Student Gram pairs (F1, F2), one per matched block (§5.3; several for Gram-Direct §7.7).
    pub student_gram_pairs: &'a [(Tensor, Tensor)],
    /// Teacher Gram pairs, same order and length as the student's.
    pub teacher_gram_pairs: &'a [(Tensor, Tensor)],
    /// Student logits `[B, n]`.
    pub student_logits: Option<&'a Tensor>,
    /// Teacher logits `[B, n]`.
    pub teacher_logits: Option<&'a Tensor>,
    /// Integer class labels `[B]`.
    pub labels: Option<&'a Tensor>,
}

/// One term of a `LossSpec::Sum`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weighted {
    /// Factor on the term's value; must be finite (may be negative or zero).
    pub weight: f64,
    /// The term's loss.
    pub loss: LossSpec,
}

/// The loss of one stage. Serialised internally tagged, e.g. `{"kind": "kd", "temperature": 4.0,
/// "alpha": 0.9}` or `{"kind": "sum", "terms": [{"weight": 1.0, "loss": {"kind": "cross_entropy"}}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossSpec {
    /// MSE_sum(student_features, teacher_features): the pyramid "L2-loss" stage 1 (§7.2) and
    /// FitNet hints (§7.6). Consumes `student_features`, `teacher_features`.
    Hint,
    /// Σ over pairs of MSE_sum(G(student pair), G(teacher pair)) (§5, §7.3, §7.7 clean definition).
    /// Consumes `student_gram_pairs`, `teacher_gram_pairs`.
    Gram,
    /// MSE_sum on raw logits, the paper's "Hinton" stage 1 (§7.4, §13 B2).
    /// Consumes `student_logits`, `teacher_logits`.
    LogitMse,
    /// α·KD + (1−α)·CE with KD = T²·KL(softmax(t/T) ‖ softmax(s/T)) (Hinton et al. 2015).
    /// Consumes `student_logits`, `teacher_logits`, and `labels` unless α = 1.
    Kd {
        /// Softmax temperature T, > 0.
        temperature: f64,
        /// Weight α ∈ [0, 1] of the KD term; 1 − α goes to cross-entropy.
        alpha: f64,
    },
    /// Batch-mean softmax CE (stage 2, Scratch). Consumes `student_logits`, `labels`.
    CrossEntropy,
    /// (β/2)·attention_transfer(student_features, teacher_features) (Zagoruyko & Komodakis 2017;
    /// the paper's β/2 convention). Consumes `student_features`, `teacher_features`.
    AttentionTransfer {
        /// Weight β (finite); the loss is multiplied by β/2.
        beta: f64,
    },
    /// α·TCKD + β·NCKD (Zhao et al. 2022, mdistiller formula), without CE: compose with
    /// `CrossEntropy` via `Sum` for the full DKD objective.
    /// Consumes `student_logits`, `teacher_logits`, `labels`.
    Dkd {
        /// Weight α of the target-class term TCKD (finite).
        alpha: f64,
        /// Weight β of the non-target-class term NCKD (finite).
        beta: f64,
        /// Softmax temperature T, > 0; both terms are scaled by T².
        temperature: f64,
    },
    /// Σ weight·loss over the terms.
    Sum {
        /// The weighted terms; at least one.
        terms: Vec<Weighted>,
    },
}

/// A tensor of a forward pass that a loss reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// A matched feature map (or, at a level that compresses the head, the logits).
    Features,
    /// Gram (FSP) pairs (F1, F2).
    GramPairs,
    /// The logits.
    Logits,
}

/// What a loss reads from the student's and the teacher's forward passes, and whether it needs
/// labels. The stage runner taps exactly these and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reads {
    /// Tensors tapped from the student's forward pass, sorted, without duplicates.
    pub student: Vec<Output>,
    /// Tensors tapped from the teacher's forward pass, sorted, without duplicates; empty when
    /// the teacher need not run.
    pub teacher: Vec<Output>,
    /// Whether the loss reads the class labels.
    pub labels: bool,
}

impl Reads {
    fn merge(mut self, other: Reads) -> Reads {
        self.student.extend(other.student);
        self.teacher.extend(other.teacher);
        self.student.sort_unstable();
        self.student.dedup();
        self.teacher.sort_unstable();
        self.teacher.dedup();
        self.labels |= other.labels;
        self
    }

    /// Whether the teacher runs at all.
    pub fn needs_teacher(&self) -> bool {
        !self.teacher.is_empty()
    }
}

/// How a loss reduces over the batch; it decides how its values are logged per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// Summed over the batch (MSE_sum, docs/method.md §0): a batch value is already a sum over images.
    Sum,
    /// Averaged over the batch: a batch value times the batch size is a sum over images.
    Mean,
    /// A `sum` whose terms reduce differently: logged as the mean of the batch values.
    Mixed,
}

/// What a stage with this loss monitors for model selection and its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// The loss itself, lower is better (label-free stages: hints, Gram, logit matching).
    Loss,
    /// Classification accuracy, higher is better (any loss that reads labels).
    Accuracy,
}

impl Monitor {
    /// True when a higher value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Monitor::Accuracy)
    }
}

fn need<'a>(loss: &'static str, input: &'static str, t: Option<&'a Tensor>) -> Result<&'a Tensor> {
    t.ok_or(LossError::MissingInput { loss, input })
}

impl LossSpec {
    /// Short name used in errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            LossSpec::Hint => "hint",
            LossSpec::Gram => "gram",
            LossSpec::LogitMse => "logit_mse",
            LossSpec::Kd { .. } => "kd",
            LossSpec::CrossEntropy => "cross_entropy",
            LossSpec::AttentionTransfer { .. } => "attention_transfer",
            LossSpec::Dkd { .. } => "dkd",
            LossSpec::Sum { .. } => "sum",
        }
    }

    /// The outputs this loss reads (a `sum` reads the union of its terms').
    pub fn reads(&self) -> Reads {
        use Output::*;
        let both = |o: Output| Reads {
            student: vec![o],
            teacher: vec![o],
            labels: false,
        };
        match self {
            LossSpec::Hint | LossSpec::AttentionTransfer { .. } => both(Features),
            LossSpec::Gram => both(GramPairs),
            LossSpec::LogitMse => both(Logits),
            LossSpec::Kd { alpha, .. } => Reads {
                labels: *alpha != 1.0,
                ..both(Logits)
            },
            LossSpec::Dkd { .. } => Reads {
                labels: true,
                ..both(Logits)
            },
            LossSpec::CrossEntropy => Reads {
                student: vec![Logits],
                teacher: vec![],
                labels: true,
            },
            LossSpec::Sum { terms } => terms
                .iter()
                .fold(Reads::default(), |acc, t| acc.merge(t.loss.reads())),
        }
    }

    /// How the loss reduces over the batch.
    pub fn reduction(&self) -> Reduction {
        match self {
            LossSpec::Hint | LossSpec::Gram | LossSpec::LogitMse => Reduction::Sum,
            LossSpec::Kd { .. }
            | LossSpec::CrossEntropy
            | LossSpec::AttentionTransfer { .. }
            | LossSpec::Dkd { .. } => Reduction::Mean,
            LossSpec::Sum { terms } => {
                let mut r = terms.iter().map(|t| t.loss.reduction());
                let first = r.next().unwrap_or(Reduction::Mean);
                if r.all(|x| x == first) {
                    first
                } else {
                    Reduction::Mixed
                }
            }
        }
    }

    /// What a stage trained with this loss monitors: accuracy when labels are read, else the loss.
    pub fn monitor(&self) -> Monitor {
        if self.reads().labels {
            Monitor::Accuracy
        } else {
            Monitor::Loss
        }
    }

    /// Checks, before anything runs, that per-sample shapes `[C, H, W]` (or `[n]` for
    /// logits) of a student and a teacher feature map suit every term of this loss that reads
    /// feature maps. The message says what does not fit.
    pub fn check_feature_shapes(&self, student: &[usize], teacher: &[usize]) -> Result<()> {
        let bad = |m: String| Err(LossError::InvalidSpec(m));
        match self {
            LossSpec::Hint if student != teacher => bad(format!(
                "hint compares equal shapes, got student {student:?} and teacher {teacher:?}"
            )),
            LossSpec::AttentionTransfer { .. } => match (student, teacher) {
                ([_, hs, ws], [_, ht, wt]) if (hs, ws) == (ht, wt) => Ok(()),
                _ => bad(format!(
                    "attention_transfer needs feature maps [C, H, W] of equal H×W, got student {student:?} and teacher {teacher:?}"
                )),
            },
            LossSpec::Sum { terms } => terms
                .iter()
                .try_for_each(|t| t.loss.check_feature_shapes(student, teacher)),
            _ => Ok(()),
        }
    }

    /// A short description for plans and logs, e.g. `1·cross_entropy + 1·kd(T=4, α=1)`.
    pub fn describe(&self) -> String {
        match self {
            LossSpec::Kd { temperature, alpha } => format!("kd(T={temperature}, α={alpha})"),
            LossSpec::AttentionTransfer { beta } => format!("attention_transfer(β={beta})"),
            LossSpec::Dkd {
                alpha,
                beta,
                temperature,
            } => format!("dkd(α={alpha}, β={beta}, T={temperature})"),
            LossSpec::Sum { terms } => terms
                .iter()
                .map(|t| format!("{}·{}", t.weight, t.loss.describe()))
                .collect::<Vec<_>>()
                .join(" + "),
            other => other.name().to_string(),
        }
    }

    /// Whether a teacher forward pass is needed.
    pub fn needs_teacher(&self) -> bool {
        self.reads().needs_teacher()
    }

    /// Whether class labels are consumed.
    pub fn needs_labels(&self) -> bool {
        self.reads().labels
    }

    /// Whether `student_features` / `teacher_features` are consumed.
    pub fn needs_features(&self) -> bool {
        self.reads().student.contains(&Output::Features)
    }

    /// Whether Gram pairs are consumed.
    pub fn needs_gram_pairs(&self) -> bool {
        self.reads().student.contains(&Output::GramPairs)
    }

    /// Whether student logits are consumed.
    pub fn needs_logits(&self) -> bool {
        self.reads().student.contains(&Output::Logits)
    }

    /// Checks hyper-parameter ranges (finite weights, T > 0, α ∈ [0, 1] for KD, non-empty sums).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LossError::InvalidSpec(m));
        match self {
            LossSpec::Kd { temperature, alpha } => {
                if !(temperature.is_finite() && *temperature > 0.0) {
                    return bad(format!("kd: temperature must be > 0, got {temperature}"));
                }
                if !(0.0..=1.0).contains(alpha) {
                    return bad(format!("kd: alpha must be in [0, 1], got {alpha}"));
                }
            }
            LossSpec::AttentionTransfer { beta } if !beta.is_finite() => {
                return bad(format!(
                    "attention_transfer: beta must be finite, got {beta}"
                ));
            }
            LossSpec::Dkd {
                alpha,
                beta,
                temperature,
            } => {
                if !(temperature.is_finite() && *temperature > 0.0) {
                    return bad(format!("dkd: temperature must be > 0, got {temperature}"));
                }
                if !(alpha.is_finite() && beta.is_finite()) {
                    return bad(format!(
                        "dkd: alpha/beta must be finite, got {alpha}/{beta}"
                    ));
                }
            }
            LossSpec::Sum { terms } => {
                if terms.is_empty() {
                    return bad("sum: no terms".into());
                }
                for t in terms {
                    if !t.weight.is_finite() {
                        return bad(format!("sum: weight must be finite, got {}", t.weight));
                    }
                    t.loss.validate()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Computes the scalar loss from `inputs`. Teacher tensors are detached first.
    pub fn evaluate(&self, inputs: &LossInputs<'_>) -> Result<Tensor> {
        let name = self.name();
        let teacher = |input: &'static str, t: Option<&Tensor>| -> Result<Tensor> {
            Ok(need(name, input, t)?.detach())
        };
        match self {
            LossSpec::Hint => f::mse_sum(
                need(name, "student_features", inputs.student_features)?,
                &teacher("teacher_features", inputs.teacher_features)?,
            ),
            LossSpec::Gram => {
                let (s, t) = (inputs.student_gram_pairs, inputs.teacher_gram_pairs);
                if s.is_empty() || s.len() != t.len() {
                    return Err(LossError::GramPairCount {
                        student: s.len(),
                        teacher: t.len(),
                    });
                }
                let mut total: Option<Tensor> = None;
                for ((s1, s2), (t1, t2)) in s.iter().zip(t) {
                    let l = f::gram_loss((s1, s2), (&t1.detach(), &t2.detach()))?;
                    total = Some(match total {
                        None => l,
                        Some(acc) => (acc + l)?,
                    });
                }
                Ok(total.expect("non-empty pairs"))
            }
            LossSpec::LogitMse => f::logit_mse(
                need(name, "student_logits", inputs.student_logits)?,
                &teacher("teacher_logits", inputs.teacher_logits)?,
            ),
            LossSpec::Kd { temperature, alpha } => {
                let s = need(name, "student_logits", inputs.student_logits)?;
                let t = teacher("teacher_logits", inputs.teacher_logits)?;
                let kd = (f::kd_kl(s, &t, *temperature)? * *alpha)?;
                if *alpha == 1.0 {
                    return Ok(kd);
                }
                let ce = f::cross_entropy(s, need(name, "labels", inputs.labels)?)?;
                Ok((kd + (ce * (1.0 - alpha))?)?)
            }
            LossSpec::CrossEntropy => f::cross_entropy(
                need(name, "student_logits", inputs.student_logits)?,
                need(name, "labels", inputs.labels)?,
            ),
            LossSpec::AttentionTransfer { beta } => {
                let at = f::attention_transfer(
                    need(name, "student_features", inputs.student_features)?,
                    &teacher("teacher_features", inputs.teacher_features)?,
                )?;
                Ok((at * (beta / 2.0))?)
            }
            LossSpec::Dkd {
                alpha,
                beta,
                temperature,
            } => f::dkd(
                need(name, "student_logits", inputs.student_logits)?,
                &teacher("teacher_logits", inputs.teacher_logits)?,
                need(name, "labels", inputs.labels)?,
                *alpha,
                *beta,
                *temperature,
            ),
            LossSpec::Sum { terms } => {
                if terms.is_empty() {
                    return Err(LossError::InvalidSpec("sum: no terms".into()));
                }
                let mut total: Option<Tensor> = None;
                for t in terms {
                    let l = (t.loss.evaluate(inputs)? * t.weight)?;
                    total = Some(match total {
                        None => l,
                        Some(acc) => (acc + l)?,
                    });
                }
                Ok(total.expect("non-empty terms"))
            }
        }
    }
}
