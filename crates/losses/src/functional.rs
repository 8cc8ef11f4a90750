//! Loss functions as pure, differentiable functions over candle tensors.

use candle_core::{DType, Tensor, D};

use crate::error::{LossError, Result};

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(LossError::ShapeMismatch {
            op,
            a: a.shape().clone(),
            b: b.shape().clone(),
        });
    }
    Ok(())
}

fn logits_2d(op: &'static str, what: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    t.dims2().map_err(|_| LossError::BadShape {
        op,
        what,
        shape: t.shape().clone(),
        expected: "[B, n]",
    })
}

/// Σ (a−b)² over all elements: PyTorch `MSELoss(size_average=False)` (docs/method.md §0, §13 B13).
/// No division by batch size or element count.
pub fn mse_sum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("mse_sum", a, b)?;
    Ok((a - b)?.sqr()?.sum_all()?)
}

/// Numerically stable log-softmax over the last dimension. The max is detached: the result is
/// shift-invariant, so it carries no gradient anyway and this keeps the graph small.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

fn check_labels(op: &'static str, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, _n) = logits_2d(op, "logits", logits)?;
    let bad = || LossError::BadShape {
        op,
        what: "labels",
        shape: labels.shape().clone(),
        expected: "[B] integer class indices with B = logits.dim(0)",
    };
    if labels.dims() != [b] || labels.dtype().is_float() {
        return Err(bad());
    }
    // gather wants u32/i64/u8 indices of shape [B, 1].
    let labels = match labels.dtype() {
        DType::U8 | DType::U32 | DType::I64 => labels.clone(),
        _ => labels.to_dtype(DType::U32)?,
    };
    Ok(labels.unsqueeze(1)?.contiguous()?)
}

/// Batch-mean softmax cross-entropy on raw logits `[B, n]` with integer labels `[B]` (docs/method.md §0 "CE").
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let idx = check_labels("cross_entropy", logits, labels)?;
    let picked = log_softmax(logits)?.gather(&idx, 1)?;
    Ok(picked.mean_all()?.neg()?)
}

/// Nearest-neighbour upsampling by integer factors via reshape + broadcast, so the backward
/// pass is a plain sum (candle's own `upsample_nearest2d` backward needs equal factors).
fn upsample_nearest_int(x: &Tensor, to_h: usize, to_w: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    // Integer factors only (§5.1).
    if h == 0 || w == 0 || (to_h / h) * h != to_h || (to_w / w) * w != to_w {
        return Err(LossError::NonIntegerUpsample {
            from_h: h,
            from_w: w,
            to_h,
            to_w,
        });
    }
    let (sh, sw) = (to_h / h, to_w / w);
    Ok(x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, sh, w, sw))?
        .reshape((b, c, to_h, to_w))?)
}

fn dims4(op: &'static str, what: &'static str, t: &Tensor) -> Result<(usize, usize, usize, usize)> {
    t.dims4().map_err(|_| LossError::BadShape {
        op,
        what,
        shape: t.shape().clone(),
        expected: "[B, C, H, W]",
    })
}

/// Gram (FSP) matrix per docs/method.md §5.1: `f1 [B,m,h,w]`, `f2 [B,k,h',w']` → `[B,m,k]`,
/// `G[i,j] = Σ_{s,t} F1[i,s,t]·F2[j,s,t] / (h·w)`.
///
/// If both h≠h' and w≠w', F2 is nearest-neighbour upsampled to h×w (integer factors only; ×2 in
/// the pyramid, ×4 in the level-skipping experiment of docs/method.md §7.10). Any other spatial mismatch is an error.
pub fn gram(f1: &Tensor, f2: &Tensor) -> Result<Tensor> {
    let (b, m, h, w) = dims4("gram", "f1", f1)?;
    let (b2, k, h2, w2) = dims4("gram", "f2", f2)?;
    let mismatch = || LossError::ShapeMismatch {
        op: "gram",
        a: f1.shape().clone(),
        b: f2.shape().clone(),
    };
    if b != b2 {
        return Err(mismatch());
    }
    let f2 = if h != h2 && w != w2 {
        upsample_nearest_int(f2, h, w)?
    } else if h != h2 || w != w2 {
        // The original only upsamples when both sides differ (§5.1); anything else would crash there.
        return Err(mismatch());
    } else {
        f2.clone()
    };
    let hw = h * w;
    let a = f1.reshape((b, m, hw))?;
    let c = f2.reshape((b, k, hw))?;
    let g = a.matmul(&c.t()?)?;
    Ok((g / hw as f64)?)
}

/// MSE_sum between the Gram matrices of the student pair and the teacher pair (docs/method.md §5.1).
pub fn gram_loss(student: (&Tensor, &Tensor), teacher: (&Tensor, &Tensor)) -> Result<Tensor> {
    let gs = gram(student.0, student.1)?;
    let gt = gram(teacher.0, teacher.1)?;
    mse_sum(&gs, &gt)
}

/// The paper's "Hinton" stage-1 loss: MSE_sum on raw logits (docs/method.md §7.4, §13 B2).
pub fn logit_mse(student_logits: &Tensor, teacher_logits: &Tensor) -> Result<Tensor> {
    mse_sum(student_logits, teacher_logits)
}

/// Σ_i p_i (log p_i − log q_i) / B from log-probabilities; p = exp(log_p). Written with
/// log-probabilities so an underflowed p_i = 0 contributes 0, not NaN (PyTorch uses xlogy).
fn kl_batchmean(log_p: &Tensor, log_q: &Tensor) -> Result<Tensor> {
    let b = log_p.dim(0)?;
    let kl = (log_p.exp()? * (log_p - log_q)?)?.sum_all()?;
    Ok((kl / b as f64)?)
}

fn check_temperature(op: &'static str, t: f64) -> Result<()> {
    if !(t.is_finite() && t > 0.0) {
        return Err(LossError::InvalidSpec(format!(
            "{op}: temperature must be finite and > 0, got {t}"
        )));
    }
    Ok(())
}

/// True Hinton KD: KL(softmax(t/T) ‖ softmax(s/T)), batch-mean, × T².
/// Equals PyTorch `F.kl_div(F.log_softmax(s/T,1), F.softmax(t/T,1), reduction="batchmean") * T*T`.
pub fn kd_kl(student_logits: &Tensor, teacher_logits: &Tensor, temperature: f64) -> Result<Tensor> {
    check_temperature("kd_kl", temperature)?;
    logits_2d("kd_kl", "student_logits", student_logits)?;
    same_shape("kd_kl", student_logits, teacher_logits)?;
    let log_q = log_softmax(&(student_logits / temperature)?)?;
    let log_p = log_softmax(&(teacher_logits / temperature)?)?;
    Ok((kl_batchmean(&log_p, &log_q)? * (temperature * temperature))?)
}

/// Spatial attention map of Zagoruyko & Komodakis (2017): channel-mean of squared activations,
/// flattened and L2-normalised per sample (`F.normalize`, eps 1e-12). `[B,C,H,W]` → `[B,H·W]`.
pub fn attention_map(x: &Tensor) -> Result<Tensor> {
    let (b, _c, h, w) = dims4("attention_map", "x", x)?;
    let a = x.sqr()?.mean(1)?.reshape((b, h * w))?;
    let norm = a
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    Ok(a.broadcast_div(&norm)?)
}

/// Attention transfer: squared L2 distance between the normalised attention maps of student and
/// teacher, summed over positions and averaged over the batch. Channel counts may differ; spatial
/// sizes must match. (The authors' code takes `.pow(2).mean()` over batch *and* positions, i.e.
/// this value divided by H·W.)
pub fn attention_transfer(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let (bs, _, hs, ws) = dims4("attention_transfer", "student", student)?;
    let (bt, _, ht, wt) = dims4("attention_transfer", "teacher", teacher)?;
    if (bs, hs, ws) != (bt, ht, wt) {
        return Err(LossError::ShapeMismatch {
            op: "attention_transfer",
            a: student.shape().clone(),
            b: teacher.shape().clone(),
        });
    }
    let d = (attention_map(student)? - attention_map(teacher)?)?;
    Ok((d.sqr()?.sum_all()? / bs as f64)?)
}

/// log Σ exp over the last dimension, stable.
fn logsumexp(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    Ok((x
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + max)?)
}

/// Decoupled KD (Zhao et al. 2022), mdistiller's `dkd_loss`: α·TCKD + β·NCKD, each a batch-mean
/// KL × T². TCKD compares the binary (target, non-target) distributions; NCKD the distributions
/// over non-target classes (target logit masked with −1000, as in mdistiller). The CE term and
/// the warm-up factor of mdistiller's `DKD` module are not included (compose with `CrossEntropy`).
pub fn dkd(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    labels: &Tensor,
    alpha: f64,
    beta: f64,
    temperature: f64,
) -> Result<Tensor> {
    check_temperature("dkd", temperature)?;
    same_shape("dkd", student_logits, teacher_logits)?;
    let idx = check_labels("dkd", student_logits, labels)?;
    let (b, n) = student_logits.dims2()?;
    let dev = student_logits.device();
    let dtype = student_logits.dtype();
    // One-hot target mask [B, n].
    let gt = Tensor::zeros((b, n), dtype, dev)?.scatter_add(
        &idx,
        &Tensor::ones((b, 1), dtype, dev)?,
        1,
    )?;
    let zs = (student_logits / temperature)?;
    let zt = (teacher_logits / temperature)?;

    // log of the binary distribution [p_target, 1 − p_target], computed with log-sum-exp:
    // log(1 − p_t) = lse(z − 1000·gt) − lse(z). Same value as mdistiller's log(cat_mask(softmax)).
    let binary_log = |z: &Tensor| -> Result<(Tensor, Tensor)> {
        let lse_all = logsumexp(z)?;
        let masked = (z - (&gt * 1000.0)?)?;
        let log_target = z.gather(&idx, 1)?.broadcast_sub(&lse_all)?;
        let log_other = logsumexp(&masked)?.broadcast_sub(&lse_all)?;
        Ok((Tensor::cat(&[&log_target, &log_other], 1)?, masked))
    };
    let (bin_s, masked_s) = binary_log(&zs)?;
    let (bin_t, masked_t) = binary_log(&zt)?;
    let t2 = temperature * temperature;
    let tckd = (kl_batchmean(&bin_t, &bin_s)? * t2)?;
    let nckd = (kl_batchmean(&log_softmax(&masked_t)?, &log_softmax(&masked_s)?)? * t2)?;
    Ok(((tckd * alpha)? + (nckd * beta)?)?)
}
