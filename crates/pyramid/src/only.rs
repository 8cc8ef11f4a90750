//! One step of a plan on its own (`pyramid run --only STEP`): what a cluster job runs.
//!
//! The step reads only its predecessors' `final.safetensors` (the model it starts from and the
//! one it learns from), which must be complete in the run directory with the plan's
//! fingerprints. Several steps of one run directory may run at once: each holds the run
//! directory's lock shared and its own step's lock (`<out>/<step>.lock`) exclusively, and
//! `results.json`, `report.md`, `config.toml` and `plan.json` are written under a short lock.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use pyramid_train::fsio::write_atomic;

use crate::data::ExperimentData;
use crate::fingerprint::Fingerprints;
use crate::method::ModelRef;
use crate::plan::Plan;
use crate::run::{self, Ctx, Found, Models, Results, RunOptions};
use crate::rundir::{RunLock, SharedFilesLock};
use crate::{Error, ExperimentConfig};

/// The step labels of a plan, in the order a whole run trains them: `teacher`, then the levels.
pub fn step_labels(plan: &Plan) -> Vec<String> {
    std::iter::once("teacher".to_string())
        .chain(plan.steps.iter().map(|s| s.at.0.clone()))
        .collect()
}

/// The models a step needs complete before it starts: the one it starts from and the one it
/// learns from (none for the teacher). `Err` lists the plan's steps when `step` is not one.
pub fn predecessors(plan: &Plan, step: &str) -> Result<Vec<ModelRef>, Error> {
    if step == "teacher" {
        return Ok(Vec::new());
    }
    let Some(s) = plan.steps.iter().find(|s| s.at.0 == step) else {
        return Err(Error::UnknownStep {
            step: step.to_string(),
            valid: step_labels(plan),
        });
    };
    let mut needs = vec![s.init.from.clone()];
    if let Some(t) = &s.teacher {
        if !needs.contains(t) {
            needs.push(t.clone());
        }
    }
    Ok(needs)
}

/// Runs (or resumes, or finds complete) the step `only` of `plan`, then rewrites the run
/// directory's `results.json` and `report.md` from every complete model there.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_step(
    cfg: &ExperimentConfig,
    plan: &Plan,
    data: &ExperimentData,
    fingerprints: Fingerprints,
    device: Device,
    opts: &RunOptions,
    only: &str,
    started: Instant,
) -> Result<Results, Error> {
    let needs = predecessors(plan, only)?;
    let at = ModelRef(only.to_string());
    let out = cfg.out_dir.clone();
    let _run_lock = RunLock::acquire_shared(&out)?;
    let step_lock = RunLock::step(&out, only)?;
    // Only this step's folder: the other steps' temp files may be other jobs' writes in flight.
    let step_dir = out.join(only);
    for p in pyramid_fsio::remove_temp_files(&step_dir)? {
        tracing::info!("removed {}, left by a killed run", p.display());
    }
    let subset = |refs: &[&ModelRef]| {
        Fingerprints(
            refs.iter()
                .map(|r| (r.0.clone(), fingerprints.get(&r.0).clone()))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    // Predecessors are never redone here (another job may be reading them): --force applies to
    // this step only.
    let before = run::survey(&out, &subset(&needs.iter().collect::<Vec<_>>()), false)?;
    let missing: Vec<String> = needs
        .iter()
        .filter(|r| !matches!(before.get(&r.0), Some(Found::Complete)))
        .map(|r| {
            let state = match before.get(&r.0) {
                Some(Found::Resumable) => "has only a resume state",
                _ => "has not been trained",
            };
            // The label, not the model's name: it is what `--only` takes.
            format!(
                "{} {state} (no result.json): run `--only {}` first",
                r.0, r.0
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(Error::NotReady {
            step: only.to_string(),
            dir: out.display().to_string(),
            missing,
        });
    }
    let found = run::survey(&out, &subset(&[&at]), opts.force)?;
    // Concurrent steps append to one run.log, each under its own header.
    if let Some(hook) = &opts.on_run_dir {
        (hook.0)(&out).map_err(Error::io("start the run's files in", &out))?;
    }
    write_if_absent(&out, cfg, plan)?;
    tracing::info!(
        "run directory {}, step {only} (locked: {})",
        out.display(),
        step_lock.path().display()
    );
    let header = run::results_header(cfg, plan, data);
    if matches!(found.get(only), Some(Found::Complete)) {
        tracing::info!("{only}: complete");
    } else {
        let ctx = Ctx {
            cfg,
            data,
            out: out.clone(),
            progress: opts.progress.clone(),
            device,
            fingerprints,
            interrupt: opts.interrupt.clone(),
        };
        let mut models = Models::new(plan);
        match plan.steps.iter().find(|s| s.at == at) {
            Some(step) => drop(run::run_level(&ctx, &mut models, step)?),
            None => drop(run::obtain_teacher(&ctx, plan)?),
        }
        pyramid_fsio::fault_point(&format!("level done {only}"));
    }
    let _shared = SharedFilesLock::acquire(&out)?;
    run::save_results(&out, &header, started)
}

/// Writes `config.toml` and `plan.json` unless the run directory has them: the configs of one
/// run directory may differ in their methods, and the first to arrive describes it (every
/// model's own `result.json` records what determined it).
fn write_if_absent(out: &Path, cfg: &ExperimentConfig, plan: &Plan) -> Result<(), Error> {
    let _shared = SharedFilesLock::acquire(out)?;
    let config = out.join("config.toml");
    if !config.exists() {
        let resolved = toml::to_string_pretty(cfg).map_err(|e| Error::file(&config, e))?;
        write_atomic(&config, resolved.as_bytes())?;
    }
    let plan_path = out.join("plan.json");
    if !plan_path.exists() {
        pyramid_train::fsio::write_json_atomic(&plan_path, plan)?;
    }
    Ok(())
}
