"""The runner's wing: the machinery of the paper's experiments, apart from the method itself.

The flow is one way (docs/architecture.md)::

    config ─▶ plan (identity) ─▶ build (data, backbones, adapters) ─▶ trainer (+ callbacks)
           ─▶ outcome ─▶ record (RunDir)          read back by spikelora.report and status

Modules: ``plan`` and ``identity`` (what a run is), ``adapters`` and ``backbones`` (the
``_target_`` classes of the adapter and model config groups), ``tasks``, ``data`` and
``synthetic`` (task data), ``build``, ``trainer``, ``callbacks``, ``outcome``, ``record`` (the run
directory), ``provenance`` (fingerprints), ``tracking`` (W&B), ``confdir`` and ``sweeps``.

This face imports nothing, so that reading records (``spikelora.report``) never loads torch.
The method (``spikelora.adapter``, ``neuron``, ``tokens``, ``telemetry``, ``ops``) never imports
from here. Its dependencies come with ``pip install "spikelora[experiments]"``.
"""
