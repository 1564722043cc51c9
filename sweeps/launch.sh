#!/usr/bin/env bash
# Launch one study as a Hydra multirun: sweeps/launch.sh SWEEP [LAUNCHER] [hydra overrides...]
#   SWEEP     a file of conf/sweep/ (rank, lr, glue, vth, vth_baseline, dropout, sparsity, gradnorm, spikegpt, ablation*,
#             spikegpt_clean, cpu_glue, cpu_glue_trends)
#   LAUNCHER  basic (default, one after another) | joblib (parallel on this machine) |
#             slurm (SLURM array via submitit) | submitit_local (the submitit path, locally)
# Safe to re-launch: complete runs are skipped, failed or interrupted ones run again (resuming).
set -euo pipefail
cd "$(dirname "$0")/.."
sweep=${1:?usage: sweeps/launch.sh SWEEP [LAUNCHER] [overrides...]}
shift
launcher=basic
if [[ $# -gt 0 && "$1" != *=* ]]; then
  launcher=$1
  shift
fi
exec python -m spikelora.run -m "+sweep=${sweep}" "hydra/launcher=${launcher}" "$@"
