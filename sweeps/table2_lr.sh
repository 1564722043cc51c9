#!/usr/bin/env bash
# table2_lr: the runs of sweep 'lr' (conf/sweep/lr.yaml). Usage: sweeps/table2_lr.sh [LAUNCHER] [overrides...]
exec "$(dirname "$0")/launch.sh" lr "$@"
