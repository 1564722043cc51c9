"""Other gates are other methods: named apart in run names, and never pooled into SpikeLoRA's claims."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from spikelora.experiment.confdir import CONF_DIR
from spikelora.experiment.plan import plan_run
from spikelora.report.collect import gate_of, method_label


def plan_of(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return plan_run(
            compose(config_name="config", overrides=["+experiment=smoke", *overrides]), check_resources=False
        )


def test_the_lif_run_name_is_unchanged_and_other_gates_are_named():
    lif = plan_of()
    assert lif.gate == "lif" and "-spike-r8-" in lif.run_name
    relu = plan_of("adapter.gate=relu")
    assert "-spike-relu-r8-" in relu.run_name and relu.identity != lif.identity
    assert "-spike-threshold+two_sided-" in plan_of("adapter.gate=threshold", "adapter.two_sided=true").run_name
    assert plan_of("adapter=lora").gate is None


@pytest.mark.parametrize(
    ("record", "label"),
    [
        ({"adapter": "spike"}, "spike"),  # a record made before the gate family: the LIF gate
        ({"adapter": "spike", "gate": "lif"}, "spike"),
        ({"adapter": "spike", "gate": "relu"}, "spike:relu"),
        ({"adapter": "spike", "provenance": {"canonical_config": {"adapter": {"gate": "sigmoid"}}}}, "spike:sigmoid"),
        (
            {"adapter": "spike", "gate": "lif", "provenance": {"canonical_config": {"adapter": {"two_sided": True}}}},
            "spike:lif+two_sided",
        ),
        ({"adapter": "lora"}, "lora"),
        ({"adapter": "spike_adalora", "gate": "lif"}, "spike_adalora"),
    ],
)
def test_tables_and_claims_call_only_the_lif_gate_spikelora(record, label):
    assert method_label(record) == label
    assert (gate_of(record) is None) == (record["adapter"] == "lora")
