#!/usr/bin/env bash
# fig4_gradnorm: the runs of sweep 'gradnorm' (conf/sweep/gradnorm.yaml). Usage: sweeps/fig4_gradnorm.sh [LAUNCHER] [overrides...]
exec "$(dirname "$0")/launch.sh" gradnorm "$@"
