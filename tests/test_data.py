"""GLUE's original file layouts and the Subj files, written small by the test and read back."""

from __future__ import annotations

import numpy as np
import pytest
from builders import glue_files, write_lines

from spikelora.experiment.data import DataError, load_task_data
from spikelora.experiment.tasks import TASKS, compute_metrics, get_task

EXPECTED = {
    # task: (train labels, {eval split: labels})
    "cola": ([1, 0], {"validation": [0, 1]}),
    "sst2": ([1, 0], {"validation": [1]}),
    "mrpc": ([1, 0], {"validation": [1]}),
    "stsb": ([5.0], {"validation": [1.6]}),
    "qqp": ([1, 0], {"validation": [1]}),
    "mnli": ([0, 2], {"validation_matched": [1], "validation_mismatched": [2, 0]}),
    "qnli": ([0, 1], {"validation": [1]}),
    "rte": ([1, 0], {"validation": [0]}),
}


@pytest.mark.parametrize("task", list(EXPECTED))
def test_glue_layouts_load_with_hub_label_ids(task, tmp_path):
    data = load_task_data(task, glue_files(task, tmp_path))
    spec = get_task(task)
    train_labels, evals = EXPECTED[task]
    assert data["train"]["label"] == pytest.approx(train_labels)
    assert set(data) == {"train", *evals} == {"train", *spec.eval_splits}
    for split, labels in evals.items():
        assert data[split]["label"] == pytest.approx(labels)
    assert set(data["train"].column_names) == {*spec.text_fields, "label"}


def test_text_fields_are_read_verbatim(tmp_path):
    stsb = load_task_data("stsb", glue_files("stsb", tmp_path))
    assert stsb["train"]["sentence1"] == ['A "plane" takes off.']
    mrpc = load_task_data("mrpc", glue_files("mrpc", tmp_path))
    assert mrpc["train"]["sentence2"][0] == "He went away."
    cola = load_task_data("cola", glue_files("cola", tmp_path))
    assert cola["validation"]["sentence"] == ["Sat cat the.", "The dog ran."]


def test_bad_rows_name_file_and_line(tmp_path):
    d = glue_files("rte", tmp_path)
    write_lines(d / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tentailment", "1\tC.\tmaybe"])
    with pytest.raises(DataError, match=r"dev.tsv:3: expected 4 tab-separated columns, found 3"):
        load_task_data("rte", d)
    write_lines(d / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tentailed"])
    with pytest.raises(DataError, match=r"dev.tsv:2: label 'entailed' is not one of"):
        load_task_data("rte", d)
    d = glue_files("sst2", tmp_path)
    write_lines(d / "train.tsv", ["sentence\tlabel", "fine\t1", "odd\t2"])
    with pytest.raises(DataError, match=r"train.tsv:3: label '2' is outside 0..1"):
        load_task_data("sst2", d)
    write_lines(d / "train.tsv", ["text\tlabel", "fine\t1"])
    with pytest.raises(DataError, match=r"header lacks column\(s\) \['sentence'\]"):
        load_task_data("sst2", d)
    write_lines(d / "train.tsv", ["sentence\tlabel", "fine\t1"])
    (d / "dev.tsv").unlink()
    with pytest.raises(DataError, match=r"Missing data file\(s\) dev.tsv in .* for task 'sst2'"):
        load_task_data("sst2", d)


def test_subj_split_is_stratified_and_independent_of_anything_but_split_seed(tmp_path):
    quotes = [f"i think movie {i} is wonderful" for i in range(50)]
    plots = [f"the hero travels to caf\xe9 {i}" for i in range(50)]
    write_lines(tmp_path / "quote.tok.gt9.5000", quotes, encoding="latin-1")
    write_lines(tmp_path / "plot.tok.gt9.5000", plots, encoding="latin-1")
    a = load_task_data("subj", tmp_path, split_seed=0)
    b = load_task_data("subj", tmp_path, split_seed=0)
    c = load_task_data("subj", tmp_path, split_seed=1)
    assert (len(a["train"]), len(a["validation"])) == (90, 10)
    assert sorted(a["validation"]["label"]) == [0] * 5 + [1] * 5
    assert a["validation"]["text"] == b["validation"]["text"]
    assert a["validation"]["text"] != c["validation"]["text"]
    objective = [t for t, y in zip(a["train"]["text"], a["train"]["label"]) if y == 0]
    assert all(t.startswith("the hero travels to café") for t in objective)


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match=r"Unknown task 'colaa'. Known tasks: cola, sst2"):
        get_task("colaa")


def test_metrics_match_definitions():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 1])
    cola = compute_metrics(TASKS["cola"], logits, labels)
    # tp=2 tn=1 fp=0 fn=1 → MCC = (2·1 − 0·1) / sqrt(2·3·1·2)
    assert cola["mcc"] == pytest.approx(2 / np.sqrt(12))
    mrpc = compute_metrics(TASKS["mrpc"], logits, labels)
    assert mrpc == pytest.approx({"accuracy": 0.75, "f1": 0.8})
    stsb = compute_metrics(TASKS["stsb"], np.array([[1.0], [2.0], [3.0], [5.0]]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert stsb["spearman"] == pytest.approx(1.0)
    assert 0.9 < stsb["pearson"] < 1.0
