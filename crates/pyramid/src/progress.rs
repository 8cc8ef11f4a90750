//! Progress bars of a run: one per stage (epochs, against the schedule's bound) and, below
//! it, one per pass over the data (a training epoch's batches, or an evaluation's).
//!
//! Bars live in the caller's [`MultiProgress`], which draws on stderr only when it is a
//! terminal; log lines must go through [`MultiProgress::suspend`] so they do not tear them
//! (the CLI's log writer does). Without a `MultiProgress` every bar is hidden.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pyramid_train::schedule::{ScheduleConfig, StopRule};

/// A bar that clears itself and leaves its `MultiProgress` when dropped (also on an error
/// or an interrupt, so no half-drawn bar stays above the message).
pub(crate) struct Bar {
    bar: ProgressBar,
    multi: Option<MultiProgress>,
}

impl Bar {
    fn new(multi: Option<&MultiProgress>, len: Option<u64>, template: &str) -> Self {
        let Some(m) = multi else {
            return Self {
                bar: ProgressBar::hidden(),
                multi: None,
            };
        };
        let bar = match len {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::no_length(),
        };
        // The templates are constants of this module; a bad one would only lose the style.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self {
            bar: m.add(bar),
            multi: Some(m.clone()),
        }
    }

    /// The bar of a stage: epochs done out of the schedule's maximum, with an ETA. "≤" marks
    /// a schedule whose stop rule may end the stage sooner; a plateau schedule without
    /// `max_epochs` has no bound, so it shows the epoch count alone.
    pub(crate) fn stage(
        multi: Option<&MultiProgress>,
        label: &str,
        schedule: &ScheduleConfig,
        done: u64,
    ) -> Self {
        let early = match schedule {
            ScheduleConfig::Plateau(c) => c.stop != StopRule::Never,
            _ => false,
        };
        let le = if early { "≤" } else { "" };
        let max = schedule.max_epochs();
        let template = match max {
            Some(_) => format!(
                "{{prefix}} [{{bar:20}}] epoch {{pos}}/{le}{{len}} · {{elapsed}} · ETA {le}{{eta}}"
            ),
            None => "{prefix} {spinner} epoch {pos} (until the schedule stops) · {elapsed}".into(),
        };
        let b = Self::new(multi, max, &template);
        b.bar.set_prefix(label.to_string());
        b.bar.set_position(done);
        b.bar.reset_eta();
        b
    }

    /// The bar of one training epoch: batches, with the running loss and accuracy, images/s
    /// and an ETA in its message (see [`Bar::train_step`]).
    pub(crate) fn epoch(multi: Option<&MultiProgress>, epoch: u64, batches: u64) -> Self {
        let b = Self::new(
            multi,
            Some(batches),
            "  {prefix} [{bar:30}] {pos}/{len} batches · {msg} · ETA {eta}",
        );
        b.bar.set_prefix(format!("epoch {epoch}"));
        b.bar.set_message("first batch");
        b
    }

    /// The bar of one evaluation pass (`what`: "val", "test").
    pub(crate) fn eval(multi: Option<&MultiProgress>, what: &str, batches: u64) -> Self {
        let b = Self::new(
            multi,
            Some(batches),
            "  {prefix} [{bar:30}] {pos}/{len} batches · ETA {eta}",
        );
        b.bar.set_prefix(format!("evaluating on {what}"));
        b
    }

    /// Marks one more batch of an epoch: `loss` is the running mean per image, `acc` the
    /// running accuracy (%), `images_per_sec` the epoch's rate so far.
    pub(crate) fn train_step(&self, loss: f64, acc: Option<f64>, images_per_sec: f64) {
        if self.bar.is_hidden() {
            return;
        }
        self.bar.set_message(format!(
            "loss {loss:.4}{} · {images_per_sec:.0} img/s",
            acc.map(|a| format!(" acc {a:.2}%")).unwrap_or_default()
        ));
        self.bar.inc(1);
    }

    pub(crate) fn inc(&self) {
        self.bar.inc(1);
    }

    pub(crate) fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        if let Some(m) = &self.multi {
            m.remove(&self.bar);
        }
    }
}
