#!/usr/bin/env bash
# The reviewers' study (docs/ablation.md): MiniLM-L6 on the real STS-B and MRPC files, every gate,
# baseline and control of claims C11-C24, 5 seeds: 140 runs in three parts, then the ledger.
#   sweeps/ablation.sh [LAUNCHER] [overrides...]     e.g. joblib, or glue_dir=/data/glue seed=0,1,2,3,4,5,6,7
# Part 1 (arm=spike) measures SpikeLoRA's sparsity per task; part 2's matched controls (topk,
# random, lora_effective) take it. Safe to re-launch: complete runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
results=results
for a in "$@"; do [[ $a == results_dir=* ]] && results=${a#results_dir=}; done
"$(dirname "$0")/launch.sh" ablation_reference "$@"
# shellcheck disable=SC2207  # the overrides are words without spaces
matched=($(python -m spikelora.report matched-sparsity "$results/ablation"))
echo "matched controls: ${matched[*]}"
"$(dirname "$0")/launch.sh" ablation "$@" "${matched[@]}"
"$(dirname "$0")/launch.sh" ablation_stsb "$@"
python -m spikelora.report claims "$results/ablation" --out "$results/ablation/report"
