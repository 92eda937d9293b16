#!/bin/bash
# Digits evidence for DRA: searched policy, published CIFAR-10 policy, destructive op; per seed.
# Usage: experiments/dra/run_digits.sh OUT_DIR "SEEDS" [DESTRUCTIVE_SEEDS]
set -e
out=${1:-runs/gar_dra_digits}; seeds=${2:-"0 1 2"}; dseeds=${3:-"0 1"}
for s in $seeds; do
  python -m gar_jax.main --config=configs/digits_dra.py --workdir=$out/dra_search_s$s \
    --config.seed=$s --config.progress_bar=False
  python -m gar_jax.main --config=configs/digits_dra.py --workdir=$out/dra_cifar10_s$s \
    --config.seed=$s --config.dra.policy=cifar10 --config.progress_bar=False
  if [[ " $dseeds " == *" $s "* ]]; then
    python -m gar_jax.main --config=configs/digits_dra_destructive.py \
      --workdir=$out/dra_destructive_s$s --config.seed=$s --config.progress_bar=False
  fi
done
