"""The reviewers' study (+experiment=ablation): its committed ledger is what its committed records give,
and every question's claim (C11 and up) has a verdict with a confidence interval."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from approx import approx_tree

from spikelora.report.claims import write_claims

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "ablation"
needs_report = pytest.mark.skipif(
    not (COMMITTED / "report" / "claims.json").is_file(), reason="no committed ablation report"
)


def study_claims(rows: list[dict]) -> list[dict]:
    return [r for r in rows if int(re.match(r"C(\d+)", r["id"]).group(1)) >= 11]


@needs_report
def test_the_committed_ablation_report_is_what_its_records_give(tmp_path):
    write_claims(COMMITTED, tmp_path)
    committed = json.loads((COMMITTED / "report" / "claims.json").read_text())
    fresh = json.loads((tmp_path / "claims.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "runs"} for r in rows]  # noqa: E731
    assert strip(fresh) == approx_tree(strip(committed))  # numbers to 1e-9 relative, text exactly
    names = lambda rows: [sorted(Path(run).name for run in r["runs"]) for r in rows]  # noqa: E731
    assert names(fresh) == names(committed)


@needs_report
def test_every_study_claim_has_a_verdict_with_a_ci_on_both_tasks_where_run():
    rows = study_claims(json.loads((COMMITTED / "report" / "claims.json").read_text()))
    ids = {r["id"] for r in rows}
    assert {f"C{i}" for i in range(11, 23)} | {"C23a", "C23b", "C24"} <= ids
    for row in rows:
        assert row["verdict"] in {"supported", "contradicted", "inconclusive"}, row["id"]
        assert math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]) and row["ci_low"] <= row["ci_high"]
        assert row["n"] >= 5, (row["id"], row["n"])  # at least five seeds (pairs) per comparison
        # A measured 0 % (the random control at eval) is a figure, not a missing one.
        assert "nan" not in row["ours"] + row["note"], (row["id"], row["note"])
    tasks_of = lambda cid: {r["group"] for r in rows if r["id"] == cid}  # noqa: E731
    for cid in ("C11", "C12", "C15", "C16", "C24"):  # the questions the study asks on MRPC too
        assert len(tasks_of(cid)) == 2, (cid, tasks_of(cid))
    # Each task's row says which dropout LoRA's grid chose on that task, and only that one.
    assert [r["note"].count("LoRA's dropout grid") for r in rows if r["id"] == "C16"] == [1, 1]
