#!/usr/bin/env bash
# appendix_dropout: the runs of sweep 'dropout' (conf/sweep/dropout.yaml). Usage: sweeps/appendix_dropout.sh [LAUNCHER] [overrides...]
exec "$(dirname "$0")/launch.sh" dropout "$@"
