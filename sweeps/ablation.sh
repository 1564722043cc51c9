#!/usr/bin/env bash
# The reviewers' study (docs/ablation.md): MiniLM-L6 on the real STS-B and MRPC files, every gate,
# baseline and control of claims C11-C24, 5 seeds: 120 runs (STS-B 85 at one epoch, MRPC 35 at
# three), then the ledger in results/ablation/report.
#   sweeps/ablation.sh [LAUNCHER] [overrides...]     e.g. joblib, or glue_dir=/data/glue seed=0,1,2,3,4,5,6,7
# Per task, SpikeLoRA's own runs come first: their measured sparsity sets the matched controls
# (topk, random, lora_effective) of the runs after them. Safe to re-launch: complete runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
results=results
for a in "$@"; do [[ $a == results_dir=* ]] && results=${a#results_dir=}; done
launch="$(dirname "$0")/launch.sh"
for task in stsb mrpc; do
  "$launch" ablation_reference "$@" "task=$task"
  matched=$(python -m spikelora.report matched-sparsity "$results/ablation" --task "$task")
  echo "matched controls ($task): $matched"
  "$launch" ablation "$@" "task=$task" "$matched"
  if [[ $task == stsb ]]; then
    "$launch" ablation_stsb "$@" "$matched"
  fi
done
python -m spikelora.report claims "$results/ablation" --out "$results/ablation/report"
