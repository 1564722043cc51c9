"""The reviewers' questions (claims C11 and up) and the ablation study's plumbing, on real tiny runs.

Every effect is checked against the per-seed differences computed here from the metrics.json files
read directly; variants of the gate must never enter the paper's claims about SpikeLoRA.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from builders import stsb_files
from hydra import compose, initialize_config_dir
from inprocess import main_here, run_here
from scipy import stats

from spikelora import SpikeLoraConfig
from spikelora.experiment.confdir import CONF_DIR
from spikelora.experiment.plan import plan_run
from spikelora.experiment.record import PAPER_GATE_SETTINGS, gate_variant
from spikelora.report.claims import build_claims
from spikelora.report.collect import collect, method_label
from spikelora.report.compare import compare_table, load_records
from spikelora.report.questions import COMPARISONS, StudyError, matched_sparsity

SEEDS = (0, 1, 2)
ARMS = {
    "spike": ["adapter=spike"],
    "relu": ["adapter=spike", "adapter.gate=relu"],
    "temporal": ["adapter=spike", "adapter.spike_mode=temporal"],
    "lora": ["adapter=lora"],
    "lora_p10": ["adapter=lora", "dropout=0.1"],
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("questions")
    stsb_files(root / "data")
    base = [
        "+experiment=smoke",
        "task=stsb",  # a continuous score: every run's differs
        f"results_dir={root / 'results'}",
        f"task.data_dir={root / 'data' / 'stsb'}",
        "task.synthetic=false",
        "trainer.max_steps=6",
        "trainer.logging_steps=2",
        "save_adapter=false",
    ]
    for (arm, overrides), seed in itertools.product(ARMS.items(), SEEDS):
        assert run_here([*base, *overrides, f"seed={seed}"], root)["status"] == "complete", arm
    results = root / "results"
    by_arm: dict[str, dict[int, dict]] = {}
    for path in sorted(results.glob("smoke/*/metrics.json")):
        m = json.loads(path.read_text())
        m["run_dir"] = str(path.parent)
        by_arm.setdefault(method_label(m), {})[m["seed"]] = m
    return results, by_arm, build_claims(collect(results).table)


def _main(m: dict) -> float:
    return 100.0 * m["final"][m["main_metric"]]


@pytest.mark.parametrize(
    ("adapter", "label"),
    [
        ({}, []),
        ({"spike_mode": "temporal"}, ["temporal"]),
        ({"spike_mode": "temporal", "spike_reset": "soft"}, ["temporal", "soft_reset"]),
        ({"spike_mode": "step", "spike_reset": "soft"}, []),  # the reset never acts in step mode
        ({"learnable_threshold": True, "tau": 4.0}, ["learnable_vth", "tau4"]),
        ({"tau": 2.0, "surrogate_alpha": 2.0, "decay_input": True}, []),
    ],
)
def test_gate_variants_are_named(adapter, label):
    assert gate_variant(adapter) == label


def test_the_paper_settings_are_the_configs_defaults_and_two_sided_is_another_gate():
    defaults = SpikeLoraConfig(target_modules=["q"])
    assert {k: getattr(defaults, k) for k in PAPER_GATE_SETTINGS} == PAPER_GATE_SETTINGS
    # two-sided firing is named once, in the gate ("lif+two_sided"), never pooled with the paper's gate
    two_sided = {
        "adapter": "spike",
        "gate": "lif",
        "provenance": {"canonical_config": {"adapter": {"two_sided": True}}},
    }
    assert gate_variant({"two_sided": True}) == []
    assert method_label(two_sided) == "spike:lif+two_sided"


@pytest.mark.slow
def test_variants_are_other_methods_in_names_and_labels(study):
    _, by_arm, _ = study
    assert set(by_arm) == {"spike", "spike:relu", "spike[temporal]", "lora"}  # both LoRA arms are "lora"
    temporal = next(iter(by_arm["spike[temporal]"].values()))
    assert "-spike-temporal-r8-" in temporal["run_name"]
    # `compare --by adapter` never pools the gates either: every arm its own row of five seeds.
    results, _, _ = study
    table = compare_table(load_records(results), ["adapter"], ["main"])
    spike_rows = table[table["adapter"] == "spike"]
    assert sorted(spike_rows["method"]) == ["spike", "spike:relu", "spike[temporal]"]
    assert set(spike_rows["n"]) == {len(SEEDS)}


@pytest.mark.slow
def test_comparisons_equal_the_per_seed_differences(study):
    _, by_arm, claims = study
    rows = {c.id: c for c in claims}
    for cid, method, other in (("C11", "spike", "spike:relu"), ("C21", "spike[temporal]", "spike")):
        d = [_main(by_arm[method][s]) - _main(by_arm[other][s]) for s in SEEDS]
        c = rows[cid]
        assert c.n == len(SEEDS) and len(set(d)) == len(d)  # the runs differ
        assert c.effect == pytest.approx(np.mean(d), abs=1e-9)
        lo, hi = stats.t.interval(0.95, len(d) - 1, loc=np.mean(d), scale=stats.sem(d))
        assert (c.ci_low, c.ci_high) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
        assert c.paper == "not in the paper"
        assert len(c.runs) == 2 * len(SEEDS)


@pytest.mark.slow
def test_lora_at_its_best_dropout_is_chosen_on_dev(study):
    results, _, claims = study
    grid: dict[float, dict[int, float]] = {}
    spike: dict[int, float] = {}
    for path in results.glob("smoke/*/metrics.json"):
        m = json.loads(path.read_text())
        if m["adapter"] == "lora":
            grid.setdefault(m["dropout"], {})[m["seed"]] = _main(m)
        elif method_label(m) == "spike":
            spike[m["seed"]] = _main(m)
    assert set(grid) == {0.0, 0.1}
    best = max(grid, key=lambda p: np.mean(list(grid[p].values())))
    c16 = next(c for c in claims if c.id == "C16")
    assert c16.effect == pytest.approx(np.mean([spike[s] - grid[best][s] for s in SEEDS]), abs=1e-9)
    assert f"→ p{best:g}" in c16.note


PAPER_CLAIMS = ("C1", "C2", "C3", "C3d", "C4a", "C4b", "C4c", "C5", "C5m", "C6", "C6g", "C7", "C8", "C9", "C10")


@pytest.mark.slow
def test_variants_never_enter_the_papers_claims(study):
    _, by_arm, claims = study
    variants = {m["run_dir"] for label in ("spike:relu", "spike[temporal]") for m in by_arm[label].values()}
    paper_rows = [c for c in claims if c.id in PAPER_CLAIMS or c.id.startswith("C10")]
    assert any(c.runs for c in paper_rows)  # the LoRA/SpikeLoRA pairs are judged ...
    for c in paper_rows:
        assert not variants & set(c.runs), c.id  # ... without a variant of the gate


@pytest.mark.slow
def test_every_question_has_a_row_and_missing_arms_say_so(study):
    _, _, claims = study
    ids = {c.id for c in claims}
    assert {comp.id for comp in COMPARISONS} | {"C24"} <= ids
    c18 = next(c for c in claims if c.id == "C18")
    assert c18.verdict == "no data" and "dora" in c18.note


@pytest.mark.slow
def test_the_sign_share_is_what_the_records_say(study):
    _, by_arm, claims = study
    shares = [
        100 * m["final"]["eval_sparsity_negative"] / m["final"]["eval_sparsity"] for m in by_arm["spike"].values()
    ]
    c24 = next(c for c in claims if c.id == "C24")
    assert c24.effect == pytest.approx(np.mean(shares) - 50.0, abs=1e-9)


@pytest.mark.slow
def test_matched_sparsity_is_the_spike_arms_mean_and_refuses_mixtures(study, tmp_path):
    results, by_arm, _ = study
    expected = round(float(np.mean([m["final"]["eval_sparsity"] for m in by_arm["spike"].values()])), 4)
    assert matched_sparsity(results, min_seeds=3) == {"stsb": expected}
    with pytest.raises(StudyError, match=r"3 complete SpikeLoRA run.* 5 needed"):
        matched_sparsity(results, min_seeds=5)
    proc = main_here("spikelora.report", ["matched-sparsity", str(results), "--min-seeds", "3"])
    assert proc.returncode == 0 and proc.stdout.strip() == f"matched_sparsity.stsb={expected}"
    # A second SpikeLoRA setting in the same folder: the control would be matched to a mixture.
    run_here(
        [
            "+experiment=smoke",
            "task=stsb",
            f"results_dir={results}",
            f"task.data_dir={results.parent / 'data' / 'stsb'}",
            "task.synthetic=false",
            "trainer.max_steps=6",
            "save_adapter=false",
            "vth=0.2",
        ],
        results.parent,
    )
    with pytest.raises(StudyError, match="SpikeLoRA runs of 2 settings"):
        matched_sparsity(results, min_seeds=3)
    proc = main_here("spikelora.report", ["matched-sparsity", str(results), "--min-seeds", "3"])
    assert proc.returncode == 2 and "2 settings" in proc.stderr


def _plan(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return plan_run(
            compose(config_name="config", overrides=["+experiment=ablation", *overrides]), check_resources=False
        )


def test_ablation_arms_compose_and_the_matched_controls_need_the_measurement():
    arms = sorted(p.stem for p in (CONF_DIR / "arm").glob("*.yaml"))
    names = set()
    for arm in arms:
        plan = _plan(f"arm={arm}", "matched_sparsity.stsb=0.75", "matched_sparsity.mrpc=0.75")
        names.add(plan.run_name.rsplit("-", 1)[0])
    assert len(names) == len(arms)  # every arm is a distinct run
    # The per-task tables are not in the identity: measuring MRPC anew leaves the STS-B runs as they were.
    a = _plan("arm=topk", "matched_sparsity.stsb=0.75", "matched_sparsity.mrpc=0.70")
    b = _plan("arm=topk", "matched_sparsity.stsb=0.75", "matched_sparsity.mrpc=0.80")
    assert a.identity == b.identity and a.canonical["adapter"]["target_sparsity"] == 0.75
    assert _plan("arm=lora").identity == _plan("arm=lora", "matched_sparsity.stsb=0.5").identity
    with pytest.raises(Exception, match="target_sparsity"):
        _plan("arm=topk")
