#!/usr/bin/env bash
# fig3_sparsity: the runs of sweep 'sparsity' (conf/sweep/sparsity.yaml). Usage: sweeps/fig3_sparsity.sh [LAUNCHER] [overrides...]
exec "$(dirname "$0")/launch.sh" sparsity "$@"
