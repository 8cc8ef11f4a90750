//! `cargo xtask slurm`: a sweep of experiment configs as Slurm jobs, one per plan step, chained
//! by Slurm's own dependencies (no scheduler of ours). See docs/distributed.md.
//!
//! - `cargo xtask slurm CONFIG... [--partition P] [--gpus-per-job N] [--time T] [--seeds K]
//!   [--dry-run] [--out MANIFEST]` expands each config's plan (`pyramid run --dry-run --json`)
//!   into one job per step: the teacher once per run directory (so per data set and seed, shared
//!   by every method of the configs that write there), then one per (scheme, method, level),
//!   with `afterok` on the jobs of the models it starts from and learns from. With `--seeds K`
//!   every job is an array of K tasks (seed = config seed + task id, run directory
//!   `<out_dir>/seed-<seed>`) and dependencies are `aftercorr` (task i waits for task i).
//! - `cargo xtask slurm status MANIFEST` prints each job's Slurm state and each step's progress
//!   in its run directories, and the `pyramid table` command for the results.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

const USAGE: &str = "\
usage: cargo xtask slurm CONFIG... [--partition P] [--gpus-per-job N] [--time T] [--seeds K]
                         [--dry-run] [--out MANIFEST] [--device D] [--features F] [--bin PYRAMID]
                         [--signal-before SECONDS] [--sbatch-arg ARG]...
       cargo xtask slurm status MANIFEST";

/// What `cargo xtask slurm` was asked.
struct Sweep {
    configs: Vec<PathBuf>,
    partition: Option<String>,
    gpus: usize,
    time: Option<String>,
    seeds: Option<u64>,
    dry_run: bool,
    manifest: PathBuf,
    device: Option<String>,
    features: Option<String>,
    bin: Option<PathBuf>,
    /// Seconds before the walltime at which Slurm sends USR1.
    signal_before: u64,
    extra: Vec<String>,
}

/// One job of the sweep: a plan step, in one run directory (or one per seed, as an array).
struct Job {
    step: String,
    config: PathBuf,
    /// The run directory of the config's seed (without `--seeds`) or of each seed.
    run_dirs: Vec<PathBuf>,
    base_dir: PathBuf,
    fingerprint: Option<String>,
    needs: Vec<usize>,
    name: String,
}

pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("status") {
        let [_, manifest] = args else {
            bail!("{USAGE}");
        };
        return status(Path::new(manifest));
    }
    let sweep = parse(args)?;
    let bin = match &sweep.bin {
        Some(b) => b.clone(),
        None => crate::build_pyramid(sweep.features.as_deref())?,
    };
    let bin = absolute(&bin)?;
    let jobs = expand(&sweep, &bin)?;
    let cwd = std::env::current_dir()?;
    let mut ids: Vec<String> = Vec::new();
    let mut records = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let script = script(&sweep, &bin, &cwd, job);
        let dep = dependency(
            &sweep,
            job.needs.iter().map(|&n| {
                ids.get(n)
                    .cloned()
                    .unwrap_or_else(|| format!("<job {}>", jobs[n].name))
            }),
        );
        if sweep.dry_run {
            println!(
                "# job {i}: {} ({})\n# sbatch --parsable{}\n{script}",
                job.step,
                job.config.display(),
                dep.as_deref().map(|d| format!(" {d}")).unwrap_or_default()
            );
            ids.push(format!("<job {}>", job.name));
        } else {
            // Slurm opens the log before the script runs.
            let logs = job.base_dir.join("slurm-logs");
            std::fs::create_dir_all(&logs)
                .with_context(|| format!("creating {}", logs.display()))?;
            let id = submit(&script, dep.as_deref())?;
            eprintln!("submitted {id}: {} in {}", job.step, job.base_dir.display());
            ids.push(id);
        }
        records.push(json!({
            "id": ids[i],
            "name": job.name,
            "step": job.step,
            "config": job.config,
            "fingerprint": job.fingerprint,
            "run_dirs": job.run_dirs,
            "depends_on": job.needs.iter().map(|&n| ids[n].clone()).collect::<Vec<_>>(),
        }));
    }
    let mut run_dirs: Vec<&PathBuf> = jobs.iter().flat_map(|j| &j.run_dirs).collect();
    run_dirs.sort();
    run_dirs.dedup();
    let manifest = json!({
        "pyramid": bin,
        "submitted": !sweep.dry_run,
        "array": sweep.seeds.is_some(),
        "run_dirs": run_dirs,
        "jobs": records,
    });
    if sweep.dry_run {
        eprintln!("dry run: nothing submitted; the manifest below is not written");
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        let text = serde_json::to_string_pretty(&manifest)? + "\n";
        pyramid_fsio::write_atomic(&sweep.manifest, text.as_bytes())
            .with_context(|| format!("writing {}", sweep.manifest.display()))?;
        eprintln!(
            "{} jobs submitted; manifest {}\nprogress: cargo xtask slurm status {}",
            jobs.len(),
            sweep.manifest.display(),
            sweep.manifest.display()
        );
    }
    Ok(())
}

fn parse(args: &[String]) -> Result<Sweep> {
    let mut s = Sweep {
        configs: Vec::new(),
        partition: None,
        gpus: 0,
        time: None,
        seeds: None,
        dry_run: false,
        manifest: PathBuf::from("slurm-manifest.json"),
        device: None,
        features: None,
        bin: None,
        signal_before: 300,
        extra: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--partition" => s.partition = Some(value(a)?),
            "--gpus-per-job" => {
                let v = value(a)?;
                s.gpus = v
                    .parse()
                    .with_context(|| format!("--gpus-per-job {v}: not a number"))?;
            }
            "--time" => s.time = Some(value(a)?),
            "--seeds" => {
                let v = value(a)?;
                let k: u64 = v
                    .parse()
                    .ok()
                    .filter(|&k| k >= 1)
                    .with_context(|| format!("--seeds {v}: expected a count of at least 1"))?;
                s.seeds = Some(k);
            }
            "--dry-run" => s.dry_run = true,
            "--out" => s.manifest = PathBuf::from(value(a)?),
            "--device" => s.device = Some(value(a)?),
            "--features" => s.features = Some(value(a)?),
            "--bin" => s.bin = Some(PathBuf::from(value(a)?)),
            "--signal-before" => {
                let v = value(a)?;
                s.signal_before = v
                    .parse()
                    .with_context(|| format!("--signal-before {v}: not a number of seconds"))?;
            }
            "--sbatch-arg" => s.extra.push(value(a)?),
            other if other.starts_with('-') => bail!("unknown flag `{other}`\n{USAGE}"),
            other => s.configs.push(PathBuf::from(other)),
        }
    }
    if s.configs.is_empty() {
        bail!("no config given\n{USAGE}");
    }
    if s.gpus > 0 && s.device.is_none() {
        s.device = Some("cuda".into());
    }
    Ok(s)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// The plan of each config, as jobs in dependency order, one per (run directory, step).
fn expand(sweep: &Sweep, bin: &Path) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut index: BTreeMap<(PathBuf, String), usize> = BTreeMap::new();
    for config in &sweep.configs {
        let config = absolute(config)?;
        let mut c = Command::new(bin);
        c.args(["run", "--dry-run", "--json"]).arg(&config);
        let out = c
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("starting {}", bin.display()))?;
        if !out.status.success() {
            bail!("{} is not a valid experiment (see above)", config.display());
        }
        let plan: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("the plan of {} as JSON", config.display()))?;
        let base_dir = absolute(Path::new(
            plan["out_dir"]
                .as_str()
                .context("plan JSON without out_dir")?,
        ))?;
        let seed = plan["seed"].as_u64().context("plan JSON without seed")?;
        let run_dirs: Vec<PathBuf> = match sweep.seeds {
            None => vec![base_dir.clone()],
            Some(k) => (seed..seed + k)
                .map(|s| base_dir.join(format!("seed-{s}")))
                .collect(),
        };
        let name = plan["name"].as_str().unwrap_or("pyramid").to_string();
        for step in plan["steps"]
            .as_array()
            .context("plan JSON without steps")?
        {
            let at = step["at"]
                .as_str()
                .context("step without `at`")?
                .to_string();
            let fingerprint = step["fingerprint"].as_str().map(String::from);
            let key = (base_dir.clone(), at.clone());
            if let Some(&i) = index.get(&key) {
                // Shared (the teacher, or a method in two configs): one job, if it is the same model.
                if jobs[i].fingerprint != fingerprint {
                    bail!(
                        "{} and {} both write {at} in {} but with different settings (fingerprints {:?} and {:?}): give them different out_dir",
                        jobs[i].config.display(),
                        config.display(),
                        base_dir.display(),
                        jobs[i].fingerprint,
                        fingerprint
                    );
                }
                continue;
            }
            let mut needs = Vec::new();
            for n in step["needs"].as_array().into_iter().flatten() {
                let n = n.as_str().context("a step's needs are labels")?;
                let i = index
                    .get(&(base_dir.clone(), n.to_string()))
                    .with_context(|| format!("{at} needs {n}, which comes later in the plan"))?;
                needs.push(*i);
            }
            index.insert(key, jobs.len());
            jobs.push(Job {
                name: format!("{name}:{at}"),
                step: at,
                config: config.clone(),
                run_dirs: run_dirs.clone(),
                base_dir: base_dir.clone(),
                fingerprint,
                needs,
            });
        }
    }
    Ok(jobs)
}

/// `--dependency=...` on the given jobs: `aftercorr` between arrays (seed i waits for seed i
/// only), `afterok` otherwise.
fn dependency(sweep: &Sweep, on: impl Iterator<Item = String>) -> Option<String> {
    let on: Vec<String> = on.collect();
    if on.is_empty() {
        return None;
    }
    let kind = if sweep.seeds.is_some() {
        "aftercorr"
    } else {
        "afterok"
    };
    Some(format!("--dependency={kind}:{}", on.join(":")))
}

/// Quotes a word for bash.
fn sh(s: impl AsRef<std::ffi::OsStr>) -> String {
    let s = s.as_ref().to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=+,@%".contains(c))
    {
        return s.into_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The batch script of one job.
fn script(sweep: &Sweep, bin: &Path, cwd: &Path, job: &Job) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let logs = job.base_dir.join("slurm-logs");
    let log_name = job.step.replace('/', "_");
    let mut directive = |d: String| {
        let _ = writeln!(s, "#SBATCH {d}");
    };
    directive(format!("--job-name={}", sh(&job.name)));
    directive(format!("--chdir={}", sh(cwd)));
    directive(if sweep.seeds.is_some() {
        format!(
            "--output={}",
            sh(logs.join(format!("{log_name}-%A_%a.out")))
        )
    } else {
        format!("--output={}", sh(logs.join(format!("{log_name}-%j.out"))))
    });
    // A requeued job appends to the same log.
    directive("--open-mode=append".into());
    directive("--requeue".into());
    directive(format!("--signal=B:USR1@{}", sweep.signal_before));
    directive("--nodes=1".into());
    directive("--ntasks=1".into());
    if let Some(k) = sweep.seeds {
        directive(format!("--array=0-{}", k - 1));
    }
    if let Some(t) = &sweep.time {
        directive(format!("--time={}", sh(t)));
    }
    if let Some(p) = &sweep.partition {
        directive(format!("--partition={}", sh(p)));
    }
    if sweep.gpus > 0 {
        directive(format!("--gpus={}", sweep.gpus));
    }
    for e in &sweep.extra {
        directive(sh(e));
    }
    let mut args = vec![
        "run".to_string(),
        sh(&job.config),
        "--only".into(),
        sh(&job.step),
        "--no-progress".into(),
    ];
    if let Some(d) = &sweep.device {
        args.extend(["--device".into(), sh(d)]);
    }
    let seed = match sweep.seeds {
        Some(_) => {
            args.extend(["--seed".into(), "\"$SEED\"".into()]);
            format!(
                "SEED=$(( {} + SLURM_ARRAY_TASK_ID ))\n",
                seed_base(job).unwrap_or(0)
            )
        }
        None => String::new(),
    };
    let _ = write!(
        s,
        r#"set -u
{seed}echo "$(date -u +%T) job ${{SLURM_JOB_ID}} (restart ${{SLURM_RESTART_COUNT:-0}}) on $(hostname): {step}"
# Slurm's pre-walltime signal (USR1, sent to this shell only: B:) asks pyramid to stop after its
# current batch with every completed epoch saved (exit 130); the job then requeues itself and
# its next start resumes from the saved state. TERM (scancel, walltime) stops it for good.
requeue=0 pid=
trap 'requeue=1; kill -TERM "$pid" 2>/dev/null' USR1
trap 'kill -TERM "$pid" 2>/dev/null' TERM
{bin} {args} &
pid=$!
# A trapped signal interrupts `wait`: wait again until pyramid has exited.
while :; do
  wait "$pid"; rc=$?
  kill -0 "$pid" 2>/dev/null || break
done
if [ "$requeue" = 1 ] && [ "$rc" = 130 ]; then
  echo "$(date -u +%T) pre-walltime signal: progress saved; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
exit "$rc"
"#,
        step = job.step,
        bin = sh(bin),
        args = args.join(" "),
    );
    s
}

/// The seed of a job's first run directory (`.../seed-<K>`).
fn seed_base(job: &Job) -> Option<u64> {
    job.run_dirs
        .first()?
        .file_name()?
        .to_str()?
        .strip_prefix("seed-")?
        .parse()
        .ok()
}

/// `sbatch --parsable [DEP]` with the script on stdin; returns the job id.
fn submit(script: &str, dep: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut c = Command::new("sbatch");
    c.arg("--parsable");
    if let Some(d) = dep {
        c.arg(d);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sbatch (is Slurm installed here?)")?;
    child
        .stdin
        .take()
        .context("sbatch's stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "sbatch failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // `--parsable` prints `id` or `id;cluster`.
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed `{}`, not a job id", text.trim());
    }
    Ok(id)
}

/// What a step's folder in a run directory shows.
fn progress(dir: &Path) -> String {
    if dir.join("result.json").exists() {
        return "complete".into();
    }
    let epochs = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    if dir.join("resume.safetensors").exists() {
        format!("resume state after epoch {epochs}")
    } else if dir.exists() {
        "started, no epoch saved yet".into()
    } else {
        "not started".into()
    }
}

/// Each job's Slurm state (`squeue`, then `sacct` for jobs that left the queue) by job or
/// array-task id (`123`, `123_0`).
fn slurm_states(ids: &[String]) -> BTreeMap<String, String> {
    let mut states = BTreeMap::new();
    let list = ids.join(",");
    let read = |c: &mut Command| -> Option<String> {
        let out = c.stderr(Stdio::null()).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    if let Some(text) =
        read(Command::new("sacct").args(["-n", "-P", "-X", "-o", "JobID,State", "-j", &list]))
    {
        for l in text.lines() {
            if let Some((id, st)) = l.split_once('|') {
                states.insert(id.trim().to_string(), st.trim().to_string());
            }
        }
    }
    // Finished jobs stay in slurmctld's memory for MinJobAge (300 s by default), for clusters
    // without accounting.
    if let Some(text) = read(Command::new("scontrol").args(["-o", "show", "job"])) {
        for l in text.lines() {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(String::from)
            };
            let (Some(id), Some(st)) = (field("JobId="), field("JobState=")) else {
                continue;
            };
            let key = match (field("ArrayJobId="), field("ArrayTaskId=")) {
                (Some(a), Some(t)) => format!("{a}_{t}"),
                _ => id,
            };
            if ids
                .iter()
                .any(|i| key == *i || key.split('_').next() == Some(i))
            {
                states.entry(key).or_insert(st);
            }
        }
    }
    // squeue knows the live ones best (and works without accounting); asked for every job,
    // since it refuses a list holding one it has forgotten.
    if let Some(text) = read(Command::new("squeue").args(["-h", "-r", "-o", "%i|%T|%r"])) {
        for l in text.lines() {
            let mut f = l.split('|');
            if let (Some(id), Some(st), reason) = (f.next(), f.next(), f.next()) {
                let job = id.trim().split('_').next().unwrap_or("");
                if !ids.iter().any(|i| i == job) {
                    continue;
                }
                let st = match reason.map(str::trim) {
                    Some(r) if !r.is_empty() && r != "None" => format!("{st} ({r})"),
                    _ => st.to_string(),
                };
                states.insert(id.trim().to_string(), st);
            }
        }
    }
    states
}

fn status(manifest: &Path) -> Result<()> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let m: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a manifest (JSON)", manifest.display()))?;
    let jobs = m["jobs"].as_array().context("manifest without jobs")?;
    let array = m["array"].as_bool().unwrap_or(false);
    let ids: Vec<String> = jobs
        .iter()
        .filter_map(|j| j["id"].as_str().map(String::from))
        .collect();
    let states = slurm_states(&ids);
    let mut complete = 0;
    let mut total = 0;
    for j in jobs {
        let id = j["id"].as_str().unwrap_or("?");
        let step = j["step"].as_str().unwrap_or("?");
        println!("job {id}  {step}");
        for (k, dir) in j["run_dirs"].as_array().into_iter().flatten().enumerate() {
            let dir = PathBuf::from(dir.as_str().unwrap_or(""));
            let task = if array {
                format!("{id}_{k}")
            } else {
                id.to_string()
            };
            let state = states
                .get(&task)
                .or_else(|| states.get(id))
                .map(String::as_str)
                // Neither queue nor accounting knows it: finished long ago, or never submitted.
                .unwrap_or("not in squeue/sacct");
            let p = progress(&dir.join(step));
            total += 1;
            complete += usize::from(p == "complete");
            println!("  {task:<12} {state:<28} {p:<32} {}", dir.display());
        }
    }
    println!("{complete}/{total} steps complete");
    let dirs: Vec<String> = m["run_dirs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().map(sh))
        .collect();
    println!(
        "tables: {} table {}",
        sh(m["pyramid"].as_str().unwrap_or("pyramid")),
        dirs.join(" ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(seeds: Option<u64>) -> Sweep {
        let mut s = parse(&["a.toml".to_string()]).unwrap();
        s.seeds = seeds;
        s
    }

    #[test]
    fn arrays_depend_task_by_task_and_single_jobs_on_success() {
        let on = || ["11".to_string(), "12".to_string()].into_iter();
        assert_eq!(
            dependency(&sweep(None), on()).as_deref(),
            Some("--dependency=afterok:11:12")
        );
        assert_eq!(
            dependency(&sweep(Some(2)), on()).as_deref(),
            Some("--dependency=aftercorr:11:12")
        );
        assert_eq!(dependency(&sweep(None), std::iter::empty()), None);
    }

    #[test]
    fn a_job_script_runs_one_step_and_requeues_on_usr1() {
        let job = Job {
            step: "forward/pyramid/SVGG17F".into(),
            config: "/c/x.toml".into(),
            run_dirs: vec!["/r/seed-3".into(), "/r/seed-4".into()],
            base_dir: "/r".into(),
            fingerprint: None,
            needs: vec![],
            name: "x:forward/pyramid/SVGG17F".into(),
        };
        let s = script(
            &sweep(Some(2)),
            Path::new("/b/pyramid"),
            Path::new("/w"),
            &job,
        );
        for want in [
            "#SBATCH --array=0-1\n",
            "#SBATCH --signal=B:USR1@300\n",
            "#SBATCH --requeue\n",
            "#SBATCH --output=/r/slurm-logs/forward_pyramid_SVGG17F-%A_%a.out\n",
            "SEED=$(( 3 + SLURM_ARRAY_TASK_ID ))\n",
            "/b/pyramid run /c/x.toml --only forward/pyramid/SVGG17F --no-progress --seed \"$SEED\" &\n",
            "scontrol requeue \"$SLURM_JOB_ID\"",
        ] {
            assert!(s.contains(want), "{want:?} missing from\n{s}");
        }
        assert_eq!(sh("it's"), r"'it'\''s'");
    }
}
