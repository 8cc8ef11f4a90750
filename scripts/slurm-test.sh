#!/usr/bin/env bash
# Live Slurm test of `cargo xtask slurm` (docs/distributed.md): installs Debian's slurm-wlm and
# munge, starts a one-node cluster on 127.0.0.1 from a minimal slurm.conf in a temp directory,
# and submits a CPU-scale sweep (teacher plus two levels, methods pyramid and fitnet, seeds 3
# and 4, embedded data). Checks:
#   1. every checkpoint, metrics.jsonl, result.json and results.json (timings aside) is
#      byte-identical to the same config run locally without Slurm;
#   2. a sweep of seed 3 alone whose teacher trains longer than a real two-minute walltime allows:
#      Slurm itself sends the pre-walltime signal (--signal=B:USR1@60), the job saves and requeues
#      itself (scontrol requeue), the requeued job resumes, and the results are again
#      byte-identical to a local run.
# Where Slurm cannot be installed or started it prints "Slurm test skipped: <reason>" and exits
# 0. Stops every daemon it started and removes its temp directory, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
started=$(date +%s)

skip() {
  echo "Slurm test skipped: $*"
  exit 0
}

[ "$(uname -s)" = Linux ] || skip "not Linux"
[ "$(id -u)" = 0 ] || skip "needs root (to install packages and run slurmd)"
command -v python3 >/dev/null || skip "python3 (used to compare results) is missing"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || skip "slurm-wlm/munge not installed and no apt-get"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) \
    >/dev/null 2>&1 || skip "apt-get install slurm-wlm munge failed"
fi

T=$(mktemp -d /tmp/pyramid-slurm.XXXXXX)
chmod 755 "$T"
PIDS=()
cleanup() {
  local rc=$?
  # Only the daemons this script started, by their pid files.
  for f in "$T/slurmd.pid" "$T/slurmctld.pid" "$T/munged.pid"; do
    if [ -s "$f" ]; then
      kill "$(cat "$f")" 2>/dev/null || true
    fi
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # Give them a moment to exit before their files go.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    alive=0
    for f in "$T/slurmd.pid" "$T/slurmctld.pid" "$T/munged.pid"; do
      [ -s "$f" ] && kill -0 "$(cat "$f" 2>/dev/null)" 2>/dev/null && alive=1
    done
    [ $alive = 0 ] && break
    sleep 0.5
  done
  if [ $rc != 0 ] && [ -d "$T" ]; then
    echo "--- slurmctld.log (tail)"; tail -n 30 "$T/slurmctld.log" 2>/dev/null || true
    echo "--- slurmd.log (tail)"; tail -n 30 "$T/slurmd.log" 2>/dev/null || true
    for f in "$T"/runs*/slurm-logs/*.out; do
      [ -f "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }
    done
  fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT

# munge: our own key, socket and state in $T.
mkdir -m 700 "$T/munge"
dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge/munge.key"
munged --force --key-file="$T/munge/munge.key" --socket="$T/munge/munge.sock" \
  --pid-file="$T/munged.pid" --log-file="$T/munged.log" --seed-file="$T/munge/seed" \
  || skip "munged did not start ($(tail -n 3 "$T/munged.log" 2>/dev/null))"

# Ports off Slurm's defaults, so a real cluster on this machine is left alone.
port=$((20000 + RANDOM % 20000))
cpus=$(nproc)
mkdir -p "$T/ctld" "$T/spool"
export SLURM_CONF="$T/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=pyramidtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$T/munge/munge.sock,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$T/ctld
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
MinJobAge=600
# Test all pending jobs every 2 s (not 60): a requeued job becomes eligible on a timer, not an event.
SchedulerParameters=sched_interval=2
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -i || skip "slurmctld did not start ($(tail -n 3 "$T/slurmctld.log" 2>/dev/null))"
slurmd -N localhost || skip "slurmd did not start ($(tail -n 3 "$T/slurmd.log" 2>/dev/null))"
for _ in $(seq 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)
  [ "$state" = idle ] && break
  sleep 1
done
[ "$state" = idle ] || skip "the node did not come up (sinfo says '${state:-nothing}'; $(tail -n 2 "$T/slurmd.log" 2>/dev/null))"
echo "slurm: one node, $cpus CPUs, up after $(( $(date +%s) - started )) s"

# One package at a time: building both in one command unifies their dependencies' features
# differently and rebuilds the whole workspace.
cargo build --release --locked -q -p pyramid-cli
cargo build --release --locked -q -p xtask
PYRAMID=$ROOT/target/release/pyramid
XTASK=$ROOT/target/release/xtask

# The chain of crates/cli/tests/resume.rs: teacher, levels 1-2, two two-stage methods.
config() { # OUT_DIR TEACHER_EPOCHS
  cat <<EOF
name = "slurm-chain"
seed = 3
out_dir = "$1"
schemes = ["forward"]
methods = ["pyramid", "fitnet"]
levels = [1, 2]

[data]
dataset = "embedded"
batch_size = 64
eval_batch_size = 200
train_per_class = 32
test_per_class = 16
augment = { hflip = true }

[model]
input_size = 32
width_div = 16
in_channels = 1
batch_norm = true

[teacher]
source = "train"
[teacher.recipe]
optimizer = { kind = "adam", lr = 2e-3 }
schedule = { kind = "constant", max_epochs = $2 }

[stage1]
optimizer = { kind = "adam", lr = 1e-3 }
schedule = { kind = "constant", max_epochs = 2 }

[stage2]
optimizer = { kind = "adam", lr = 1e-3 }
schedule = { kind = "constant", max_epochs = 2 }
EOF
}
config "$T/runs" 3 >"$T/chain.toml"
export RUST_LOG=warn

# The reference: the same config and seeds, run locally.
t0=$(date +%s)
pids=()
for s in 3 4; do
  "$PYRAMID" run "$T/chain.toml" --seed $s --out "$T/local/seed-$s" --no-progress >/dev/null &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
echo "local reference (2 seeds): $(( $(date +%s) - t0 )) s"

wait_for_sweep() { # MANIFEST STEPS TIMEOUT_S
  local deadline=$(( $(date +%s) + $3 ))
  while [ -n "$(squeue -h -o %i)" ]; do
    if [ "$(date +%s)" -gt "$deadline" ]; then
      squeue; echo "the sweep did not finish in $3 s"; return 1
    fi
    if squeue -h -o %r | grep -q DependencyNeverSatisfied; then
      squeue; echo "a job failed: its dependents can never start"; return 1
    fi
    sleep 1
  done
  "$XTASK" slurm status "$1" | tee "$T/status.txt"
  grep -q "^$2/$2 steps complete$" "$T/status.txt" || { echo "not every step is complete"; return 1; }
  grep -q "^tables: .* table $T/runs" "$T/status.txt"
}

# Every checkpoint, metrics.jsonl and result.json of a run directory, and results.json, equal
# to the reference's (timings aside); no step left a resume state.
compare() { # REFERENCE DIR SEED...
  python3 - "$@" <<'EOF'
import json, os, sys
ref, got, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
TIMINGS = {"wall_seconds", "seconds", "images_per_sec", "latency"}
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in TIMINGS}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v
def files(d):
    out = set()
    for root, _, names in os.walk(d):
        for n in names:
            if n.endswith(".safetensors") or n in ("metrics.jsonl", "result.json", "results.json", "plan.json"):
                out.add(os.path.relpath(os.path.join(root, n), d))
    return out
bad, n = [], 0
for seed in seeds:
    a, b = os.path.join(ref, f"seed-{seed}"), os.path.join(got, f"seed-{seed}")
    fa, fb = files(a), files(b)
    if fa != fb:
        bad.append(f"seed {seed}: files differ: only local {sorted(fa - fb)}, only slurm {sorted(fb - fa)}")
    for f in sorted(fa & fb):
        n += 1
        x, y = open(os.path.join(a, f), "rb").read(), open(os.path.join(b, f), "rb").read()
        if f.endswith(".json"):
            x, y = strip(json.loads(x)), strip(json.loads(y))
        if x != y:
            bad.append(f"seed {seed}: {f} differs")
    if any(f.endswith("resume.safetensors") for f in fb):
        bad.append(f"seed {seed}: a resume state was left behind")
if bad:
    print("\n".join(bad)); sys.exit(1)
print(f"{n} files identical to the local run (timings aside)")
EOF
}

t0=$(date +%s)
"$XTASK" slurm "$T/chain.toml" --seeds 2 --time 10 --bin "$PYRAMID" --out "$T/manifest.json"
wait_for_sweep "$T/manifest.json" 10 600
compare "$T/local" "$T/runs" 3 4
echo "sweep on Slurm (10 jobs in 5 arrays): $(( $(date +%s) - t0 )) s"

# A real walltime: every job of a sweep of seed 3 gets `--time=2 --signal=B:USR1@60`.
# slurmctld checks time limits every 30 s and sends the signal at the first check that finds the
# job within 60 + 30 s of its limit: 30 to 60 s after the job started, before the hard limit
# (120 s). The teacher needs 60 to 100 s on one thread and saves an epoch every 0.2 to 0.35 s:
# the signal lands mid-level with many epochs saved, the job requeues, and the restart's remaining
# work ends within its own limit (or after one more signal and requeue). The levels take a few
# seconds each. The local reference runs meanwhile, on the other core.
# The walltime test's teacher must train well past Slurm's first signal (30 to 60 s after the
# start, below): 300 epochs take 60 to 100 s on one thread of a busy 2-core machine. A faster
# machine finishes before the signal: then the attempt is repeated with twice the epochs (up to
# 1,200), so the test holds whatever the machine's speed. SLURM_TEST_TEACHER_EPOCHS sets the first
# attempt's count.
teacher_epochs=${SLURM_TEST_TEACHER_EPOCHS:-300}
t0=$(date +%s)
for attempt in 1 2 3; do
  rm -rf "$T/runs-requeue" "$T/local-requeue"
  config "$T/runs-requeue" "$teacher_epochs" >"$T/requeue.toml"
  "$PYRAMID" run "$T/requeue.toml" --seed 3 --out "$T/local-requeue/seed-3" --no-progress >/dev/null &
  ref_pid=$!
  PIDS+=("$ref_pid")
  RAYON_NUM_THREADS=1 "$XTASK" slurm "$T/requeue.toml" --seeds 1 --time 2 --signal-before 60 \
    --bin "$PYRAMID" --out "$T/manifest-requeue.json"
  echo "walltime sweep: teacher of $teacher_epochs epochs, jobs with --time=2 --signal=B:USR1@60"
  teacher=$(python3 -c 'import json,sys; print(next(j["id"] for j in json.load(open(sys.argv[1]))["jobs"] if j["step"] == "teacher"))' "$T/manifest-requeue.json")
  # Every signal comes 30 s or more into a run, which saves an epoch in well under a second, so
  # every requeue makes progress; the restarts are bounded below, the wait by its timeout.
  wait_for_sweep "$T/manifest-requeue.json" 5 300
  wait "$ref_pid"
  compare "$T/local-requeue" "$T/runs-requeue" 3
  log=$(ls "$T"/runs-requeue/slurm-logs/teacher-*_0.out)
  sed 's/^/  | /' "$log"
  show=$(scontrol show job "${teacher}_0")
  restarts=$(sed -n 's/.*Restarts=\([0-9]*\).*/\1/p' <<<"$show")
  limit=$(sed -n 's/.*TimeLimit=\([0-9:]*\).*/\1/p' <<<"$show")
  echo "teacher job ${teacher}_0: Restarts=$restarts TimeLimit=$limit $(grep -o 'JobState=[A-Z]*' <<<"$show")"
  [ "$limit" = 00:02:00 ] || { echo "the teacher's time limit is $limit, not 2 minutes"; exit 1; }
  if [ "${restarts:-0}" = 0 ]; then
    [ "$attempt" -lt 3 ] || {
      echo "the teacher was not requeued: its $teacher_epochs epochs ended before Slurm's signal (raise SLURM_TEST_TEACHER_EPOCHS)"
      exit 1
    }
    echo "attempt $attempt: the teacher's $teacher_epochs epochs ended before Slurm's signal (a fast machine); again with $((2 * teacher_epochs))"
    teacher_epochs=$((2 * teacher_epochs))
    continue
  fi
  break
done
[ "$restarts" -le 4 ] || { echo "the teacher was requeued $restarts times"; exit 1; }
signals=$(grep -c "pre-walltime signal: progress saved; requeueing" "$log" || true)
[ "$signals" = "$restarts" ] || { echo "$signals signals logged for $restarts restarts"; exit 1; }
grep -q "(restart $restarts)" "$log" || { echo "the requeued teacher did not start again"; exit 1; }
# Slurm sent each signal (the test sends none): 30 s or more into its run, before the limit. Each
# restart resumed after a later epoch than the one before: every requeue made progress.
python3 - "$log" "$T/runs-requeue/seed-3/run.log" "$restarts" "$teacher_epochs" <<'EOF'
import re, sys
resumed = [int(m[1]) for m in re.finditer(r"teacher/VGG19: resuming after epoch (\d+)", open(sys.argv[2]).read())]
if len(resumed) != int(sys.argv[3]) or resumed != sorted(set(resumed)) or resumed[0] < 1:
    sys.exit(f"the restarts resumed after epochs {resumed}: not one later epoch per restart")
print(f"  restarts resumed after epochs {', '.join(map(str, resumed))} of {sys.argv[4]}")
start, seen = None, 0
for line in open(sys.argv[1]):
    m = re.match(r"(\d\d):(\d\d):(\d\d) ", line)
    if not m:
        continue
    t = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])
    if " job " in line and "(restart" in line:
        start = t
    elif "pre-walltime signal" in line:
        seen += 1
        after = (t - start) % 86400
        if not 28 <= after < 120:
            sys.exit(f"signal {seen} came {after} s into its run: not Slurm's walltime warning")
        print(f"  signal {seen}: {after} s into a run with a 120 s limit")
EOF
echo "walltime sweep: the teacher of seed 3 was signalled by Slurm, requeued $restarts time(s) and resumed; results unchanged ($(( $(date +%s) - t0 )) s)"
echo "Slurm test passed in $(( $(date +%s) - started )) s"
