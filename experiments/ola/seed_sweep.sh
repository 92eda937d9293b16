#!/bin/bash
# Seed study of OLA's destructive-op run (experiments/ola/README.md section 6): for each variant,
# then each seed, one run of configs/digits_ola_destructive.py in RUNS/<variant>_s<seed>/, one at
# a time, single-threaded XLA pinned to one core, at the lowest priority. Resumable: rerun the
# same command; finished runs (results.json with a test accuracy) are skipped and an unfinished
# one resumes from its checkpoint. Then: python experiments/ola/seed_study.py --runs RUNS --out DIR
#
#   setsid experiments/ola/seed_sweep.sh RUNS [SEEDS] [VARIANTS] [CORE] > RUNS.log 2>&1 &
#
# SEEDS: "first-last" or a comma list (default 100-119, the report seeds); VARIANTS: comma list
# of gar (the default config), gar_full (GAR for every image: reward_fraction 1, the default
# before it was 0.5), gar_layerwise (layer-wise, frozen statistics), gar_contribution (layer-wise,
# contribution convention), nslr, gar_model_lr (the policy's lr following the model's
# schedule: ola.lr_schedule=model), gar_model_lr2 (that at a peak of 0.2), gar_lr2 (a constant
# 0.2), gar_60ep (the default over 60 epochs instead of 30), gar_ema75 / gar_ema90 (GAR against
# a moving average of the plain steps' G, decay 0.75 / 0.9), gar_response (GAR against the step's
# response, ola.gar_target=response; gar_response25: plus 0.25 x the gradient before the step),
# gar_fd (GAR by a finite difference of the per-example losses, ola.gar_method=fd), gar_both (GAR
# and the response, each normalized, summed: ola.gar_target=both) (default "gar,nslr,gar_contribution");
# CORE: the CPU core (default 1). It must be a session leader (setsid): it lowers its own autogroup's
# priority to nice 19 (/proc/self/autogroup), which plain `nice` does not do across sessions;
# SWEEP_NICE=n sets another value.
set -u
RUNS=${1:?usage: setsid $0 RUNS [SEEDS] [VARIANTS] [CORE]}
SEEDS=${2:-100-119}
VARIANTS=${3:-gar,nslr,gar_contribution}
CORE=${4:-1}
REPO=$(cd "$(dirname "$0")/../.." && pwd)

if [ "$(ps -o sid= -p $$ | tr -d ' ')" != "$$" ]; then
  echo "seed_sweep.sh: launch it with setsid (it renices its own session's autogroup)" >&2
  exit 2
fi
echo "${SWEEP_NICE:-19}" > /proc/self/autogroup || echo "seed_sweep.sh: could not set the autogroup nice" >&2

case $SEEDS in
  *-*) SEED_LIST=$(seq "${SEEDS%-*}" "${SEEDS#*-}") ;;
  *) SEED_LIST=${SEEDS//,/ } ;;
esac

flags_of() {
  case $1 in
    gar) echo "" ;;
    gar_layerwise) echo "--config.ola.gar_method=layerwise --config.ola.gar_convention=frozen" ;;
    gar_contribution)
      echo "--config.ola.gar_method=layerwise --config.ola.gar_convention=contribution" ;;
    gar_full) echo "--config.ola.reward_fraction=1.0" ;;
    nslr) echo "--config.ola.reward=nslr" ;;
    gar_model_lr) echo "--config.ola.lr_schedule=model" ;;
    gar_model_lr2) echo "--config.ola.lr_schedule=model --config.ola.learning_rate=0.2" ;;
    gar_lr2) echo "--config.ola.lr_schedule=constant --config.ola.learning_rate=0.2" ;;
    gar_60ep) echo "--config.num_epochs=60" ;;
    gar_ema75) echo "--config.ola.target_ema=0.75" ;;
    gar_ema90) echo "--config.ola.target_ema=0.9" ;;
    gar_response) echo "--config.ola.gar_target=response" ;;
    gar_response25) echo "--config.ola.gar_target=response --config.ola.before_weight=0.25" ;;
    gar_fd) echo "--config.ola.gar_method=fd" ;;
    gar_both) echo "--config.ola.gar_target=both" ;;
    *) echo "seed_sweep.sh: unknown variant $1" >&2; return 2 ;;
  esac
}
for v in ${VARIANTS//,/ }; do flags_of "$v" > /dev/null || exit 2; done

# To stop: kill -TERM <this script's pid>: the run in progress checkpoints its current step
# (the engine's SIGTERM handling) and the sweep ends; rerunning the command resumes it.
child=
stop() {
  echo "$(date -u +%FT%TZ) stopping${child:+ (run $child checkpoints)}"
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child"; fi
  exit 143
}
trap stop TERM INT

mkdir -p "$RUNS"
cd "$REPO" || exit 2
export PYTHONPATH=$REPO
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
for v in ${VARIANTS//,/ }; do
  for s in $SEED_LIST; do
    d=$RUNS/${v}_s$s
    if grep -qs test_accuracy "$d/results.json"; then continue; fi
    echo "$(date -u +%FT%TZ) start $v seed $s"
    # shellcheck disable=SC2046
    taskset -c "$CORE" nice -n "${SWEEP_NICE:-19}" python -m gar_jax.main \
      --config=configs/digits_ola_destructive.py --workdir="$d" --config.seed="$s" \
      --config.progress_bar=False $(flags_of "$v") >> "$d.log" 2>&1 &
    child=$!
    wait "$child"
    echo "$(date -u +%FT%TZ) end $v seed $s rc=$?"
  done
done
echo "$(date -u +%FT%TZ) sweep done"
