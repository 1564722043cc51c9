#!/usr/bin/env bash
# The laptop reproduction (README, "A laptop reproduction"): MiniLM-L6 on the real RTE and STS-B
# files, 30 runs in about 50 minutes on 2 CPU cores, then the claims ledger for C1-C4.
#   sweeps/cpu_glue.sh [LAUNCHER] [overrides...]     e.g. glue_dir=/data/glue results_dir=results
# Safe to re-launch: complete runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
"$(dirname "$0")/launch.sh" cpu_glue "$@"
"$(dirname "$0")/launch.sh" cpu_glue_trends "$@"
results=results
for a in "$@"; do [[ $a == results_dir=* ]] && results=${a#results_dir=}; done
python -m spikelora.report claims "$results/cpu_glue" --out "$results/cpu_glue/report"
