#!/usr/bin/env bash
# Digits evidence for Fast AutoAugment (experiments/faa/README.md): searched FAA and the
# published fa_reduced_cifar10 policy, several seeds, and the destructive-op search.
# Usage: experiments/faa/run_digits.sh OUT_DIR "SEEDS" "DESTRUCTIVE_SEEDS"
set -euo pipefail
out=${1:-runs/faa_digits}; seeds=${2:-"0 1 2"}; dseeds=${3:-"0 1"}
mkdir -p "$out"
for s in $seeds; do
  /usr/bin/time -f "%e s wall" -o "$out/search_s$s.time" python -m gar_jax.main \
    --config=configs/digits_faa.py --workdir="$out/search_s$s" --config.seed=$s \
    --config.progress_bar=False
  /usr/bin/time -f "%e s wall" -o "$out/published_s$s.time" python -m gar_jax.main \
    --config=configs/digits_faa.py:published --workdir="$out/published_s$s" --config.seed=$s \
    --config.progress_bar=False
done
for s in $dseeds; do
  /usr/bin/time -f "%e s wall" -o "$out/destructive_s$s.time" python -m gar_jax.main \
    --config=configs/digits_faa_destructive.py --workdir="$out/destructive_s$s" \
    --config.seed=$s --config.progress_bar=False
done
