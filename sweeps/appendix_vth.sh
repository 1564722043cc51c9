#!/usr/bin/env bash
# appendix_vth: the runs of sweep 'vth' (conf/sweep/vth.yaml). Usage: sweeps/appendix_vth.sh [LAUNCHER] [overrides...]
exec "$(dirname "$0")/launch.sh" vth "$@"
