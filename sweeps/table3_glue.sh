#!/usr/bin/env bash
# table3_glue: the runs of sweep 'glue' (conf/sweep/glue.yaml). Usage: sweeps/table3_glue.sh [LAUNCHER] [overrides...]
exec "$(dirname "$0")/launch.sh" glue "$@"
