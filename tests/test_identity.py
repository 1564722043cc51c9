"""A run is named by what it reads: the data files' and the local model's content, never their paths."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from environment import CALLER
from hydra import compose, initialize_config_dir

from spikelora.experiment.build import build, read_data
from spikelora.experiment.confdir import CONF_DIR
from spikelora.experiment.data import DataError
from spikelora.experiment.identity import find_legacy, record_identity, rekey
from spikelora.experiment.plan import ConfigError, plan_run
from spikelora.experiment.record import RunDir, sha256_file
from spikelora.experiment.synthetic import write_synthetic
from spikelora.run import run

GLUE = Path(CALLER.get("SPIKELORA_GLUE_DIR") or CONF_DIR.parent.parent / "shared" / "data" / "glue")
QUICK = ["trainer.max_steps=2", "max_eval_samples=16", "trainer.disable_tqdm=true", "save_adapter=false"]


def cfg_of(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture
def cola_copy(tmp_path: Path) -> Path:
    """A CoLA-format folder of real files (the generated task, written once, then data like any other)."""
    return write_synthetic("cola", tmp_path / "data" / "cola")


def on_copy(data_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "+experiment=smoke",
        "task.synthetic=false",
        f"task.data_dir={data_dir}",
        f"results_dir={tmp_path / 'results'}",
        f"cache_dir={tmp_path / 'cache'}",
        *extra,
    ]


def flip_first_label(path: Path) -> None:
    """One label flipped in place (same size: only the content, and so the sha256, changes)."""
    lines = path.read_text().splitlines(keepends=True)
    source, label, mark, sentence = lines[0].split("\t")
    lines[0] = "\t".join([source, "0" if label == "1" else "1", mark, sentence])
    size = path.stat().st_size
    path.write_text("".join(lines))
    assert path.stat().st_size == size


def test_the_same_folder_spelt_two_ways_is_one_identity(cola_copy, tmp_path):
    plain = plan_run(cfg_of(on_copy(cola_copy, tmp_path)), check_resources=False)
    (tmp_path / "x" / "y").mkdir(parents=True)
    detour = cola_copy.parents[1] / "x" / "y" / ".." / ".." / "data" / "cola"
    assert plan_run(cfg_of(on_copy(detour, tmp_path)), check_resources=False).run_name == plain.run_name
    moved = shutil.copytree(cola_copy, tmp_path / "elsewhere" / "cola")  # a copy: the same content
    assert plan_run(cfg_of(on_copy(moved, tmp_path)), check_resources=False).run_name == plain.run_name


@pytest.mark.skipif(not (GLUE / "rte" / "train.tsv").is_file(), reason="no GLUE folder (../shared/data/glue)")
def test_glue_dir_spelt_two_ways_is_one_identity(tmp_path):
    """The laptop recipe launched with the same GLUE folder spelt two ways must not train twice."""
    (tmp_path / "x").mkdir()
    detour = Path(os.path.relpath(GLUE, tmp_path / "x"))  # relative to x/, then resolved from there
    names = set()
    for glue in (GLUE.resolve(), tmp_path / "x" / detour, GLUE.resolve() / "rte" / ".."):
        cfg = cfg_of(["+experiment=cpu_glue", "task=rte", f"glue_dir={glue}", f"results_dir={tmp_path}"])
        names.add(plan_run(cfg, check_resources=False).run_name)
    assert len(names) == 1


def test_an_edited_data_file_is_another_run(cola_copy, tmp_path):
    before = plan_run(cfg_of(on_copy(cola_copy, tmp_path)), check_resources=False)
    flip_first_label(cola_copy / "train.tsv")
    after = plan_run(cfg_of(on_copy(cola_copy, tmp_path)), check_resources=False)
    assert after.run_name != before.run_name
    assert after.run_name.rsplit("-", 1)[0] == before.run_name.rsplit("-", 1)[0]
    assert after.content["data"]["files_sha256"]["train.tsv"] != before.content["data"]["files_sha256"]["train.tsv"]


@pytest.mark.slow
def test_an_edited_file_trains_anew_and_the_record_names_the_new_sha256(cola_copy, tmp_path):
    first = run(cfg_of(on_copy(cola_copy, tmp_path, *QUICK)))
    assert first["status"] == "complete"
    flip_first_label(cola_copy / "train.tsv")
    second = run(cfg_of(on_copy(cola_copy, tmp_path, *QUICK)))
    assert second["status"] == "complete" and second["run_name"] != first["run_name"]
    new_sha = second["provenance"]["data"]["files_sha256"]["train.tsv"]
    assert new_sha != first["provenance"]["data"]["files_sha256"]["train.tsv"]
    assert new_sha == second["provenance"]["content"]["data"]["files_sha256"]["train.tsv"]
    assert not second["timing"]["tokenized_from_cache"]  # an edited file never reuses cached tokens
    assert record_identity(second) == second["identity"]  # the record names what identifies it
    # The first record is untouched, and a re-run of the edited data is skipped as complete.
    assert RunDir(tmp_path / "results" / "smoke" / first["run_name"]).is_complete()
    assert run(cfg_of(on_copy(cola_copy, tmp_path, *QUICK)))["identity"] == second["identity"]


def test_an_edited_file_never_reuses_cached_tokens(cola_copy, tmp_path):
    def tokenised():
        plan = plan_run(cfg_of(on_copy(cola_copy, tmp_path, *QUICK)))
        built = build(plan)
        return built.tokenized_from_cache, built.data["train"][0]["label"]

    assert tokenised()[0] is False
    cached, label = tokenised()
    assert cached is True
    flip_first_label(cola_copy / "train.tsv")
    cached, flipped = tokenised()
    assert cached is False and flipped == 1 - label


def test_a_file_changed_between_planning_and_reading_is_caught(cola_copy, tmp_path):
    plan = plan_run(cfg_of(on_copy(cola_copy, tmp_path, *QUICK)))
    flip_first_label(cola_copy / "dev.tsv")
    with pytest.raises(DataError, match=r"dev\.tsv changed after this run was planned"):
        read_data(plan.data)
    plan = plan_run(cfg_of(on_copy(cola_copy, tmp_path, *QUICK)))  # planned anew: read as planned
    _, read = read_data(plan.data)
    assert read["files_sha256"] == plan.content["data"]["files_sha256"]


def test_generated_data_is_named_by_its_generator_and_rewritten_if_edited(tmp_path):
    cfg = cfg_of(["+experiment=smoke", f"results_dir={tmp_path / 'a'}"])
    other = cfg_of(["+experiment=smoke", f"results_dir={tmp_path / 'b'}"])  # its data_dir follows results_dir
    plan = plan_run(cfg, check_resources=False)
    assert plan.content["data"] == {"synthetic": "cola", "generator": 1}
    assert plan_run(other, check_resources=False).run_name == plan.run_name
    path = write_synthetic("cola", plan.data.data_dir) / "train.tsv"
    original = path.read_bytes()
    flip_first_label(path)
    read_data(plan.data)  # the run writes the generator's files before reading them
    assert path.read_bytes() == original


def test_max_length_beyond_the_models_positions_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"max_length=100000 is beyond model tiny's 512 positions"):
        plan_run(cfg_of(["+experiment=smoke", "max_length=100000", f"results_dir={tmp_path / 'r'}"]))
    assert not (tmp_path / "r").exists()


def test_a_legacy_record_is_shown_and_rekeyed_from_its_own_fingerprints(cola_copy, tmp_path):
    """A record made before content identity (scheme 1) never silently matches: status calls it
    legacy; --rekey renames it after the identity its recorded fingerprints give."""
    plan = plan_run(cfg_of(on_copy(cola_copy, tmp_path, *QUICK)), check_resources=False)
    old = plan.run_dir.with_name(plan.run_name.rsplit("-", 1)[0] + "-0badc0de")
    old.mkdir(parents=True)
    history = old / "history.jsonl"
    history.write_text('{"type": "step", "step": 1, "loss": 0.5}\n')

    canonical = {**plan.canonical, "task": {**plan.canonical["task"], "data_dir": str(cola_copy)}}
    record = {
        "status": "complete",
        "run_name": old.name,
        "identity": "0badc0de",
        "final": {},
        "best": {},
        "train": {},
        "main_metric": "eval_mcc",
        "files": {"history.jsonl": sha256_file(history)},
        "provenance": {
            "canonical_config": canonical,
            "data": {"files_sha256": plan.content["data"]["files_sha256"], "split_seed": 0},
            "model": {"name": "tiny", "kind": "tiny"},
        },
    }
    (old / "metrics.json").write_text(json.dumps(record))
    assert find_legacy(plan.run_dir, plan.identity) == old
    assert find_legacy(plan.run_dir, "ffffffff") is None  # another identity: no match
    new = rekey(RunDir(old))
    assert new == plan.run_dir and not old.exists()
    moved = RunDir(new).load()
    assert (moved["identity"], moved["rekeyed_from"], moved["identity_scheme"]) == (plan.identity, old.name, 2)
    assert record_identity(moved) == plan.identity


def test_a_setting_added_later_at_its_default_keeps_the_identity(cola_copy, tmp_path):
    """Records made before a setting existed keep their names; a non-default value is another run."""
    from spikelora.experiment.identity import ADDED_DEFAULTS, strip_config

    plan = plan_run(cfg_of(on_copy(cola_copy, tmp_path)), check_resources=False)
    before = {**plan.canonical, "adapter": {k: v for k, v in plan.canonical["adapter"].items() if k != "gate"}}
    assert ADDED_DEFAULTS["adapter.gate"] == "lif"
    with_default = {**before, "adapter": {**before["adapter"], "gate": "lif"}}
    with_other = {**before, "adapter": {**before["adapter"], "gate": "relu"}}
    assert strip_config(with_default) == strip_config(before)
    assert strip_config(with_other) != strip_config(before)
