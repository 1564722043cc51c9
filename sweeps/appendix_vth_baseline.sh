#!/usr/bin/env bash
# appendix_vth_baseline: the runs of sweep 'vth_baseline' (conf/sweep/vth_baseline.yaml). Usage: sweeps/appendix_vth_baseline.sh [LAUNCHER] [overrides...]
exec "$(dirname "$0")/launch.sh" vth_baseline "$@"
