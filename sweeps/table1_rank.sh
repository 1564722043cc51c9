#!/usr/bin/env bash
# table1_rank: the runs of sweep 'rank' (conf/sweep/rank.yaml). Usage: sweeps/table1_rank.sh [LAUNCHER] [overrides...]
exec "$(dirname "$0")/launch.sh" rank "$@"
