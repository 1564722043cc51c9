#!/usr/bin/env bash
# table4_spikegpt: the runs of sweep 'spikegpt' (conf/sweep/spikegpt.yaml). Usage: sweeps/table4_spikegpt.sh [LAUNCHER] [overrides...]
exec "$(dirname "$0")/launch.sh" spikegpt "$@"
