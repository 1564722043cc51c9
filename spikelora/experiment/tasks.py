"""The tasks of the paper: GLUE's eight (no WNLI) and Subj, with their labels, metrics and defaults.

Label ids equal the Hugging Face hub ``nyu-mll/glue`` ones (e.g. RTE/QNLI entailment = 0), so a
model fine-tuned on local files and one fine-tuned on hub data agree. Hyperparameters (the
paper's Appendix A, Table 1) live in ``conf/task/*.yaml``, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


@dataclass(frozen=True)
class TaskSpec:
    """What the runner needs to know about one task."""

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] | None  # None: regression (STS-B)
    metrics: tuple[str, ...]
    eval_splits: tuple[str, ...]
    hub: tuple[str, str | None] = ("nyu-mll/glue", None)
    score_range: tuple[float, float] | None = None  # regression: the scores a file may hold

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def main_metric(self) -> str:
        """The metric that picks the best evaluation: the first metric on the first eval split."""
        return f"{self.eval_prefix}_{self.metrics[0]}"

    @property
    def eval_prefix(self) -> str:
        """The prefix of the first eval split's metrics: ``eval``, or ``eval_<split>`` with several splits."""
        return "eval" if len(self.eval_splits) == 1 else f"eval_{self.eval_splits[0]}"


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec("cola", ("sentence",), ("unacceptable", "acceptable"), ("mcc",), ("validation",)),
        TaskSpec("sst2", ("sentence",), ("negative", "positive"), ("accuracy",), ("validation",)),
        TaskSpec(
            "mrpc",
            ("sentence1", "sentence2"),
            ("not_equivalent", "equivalent"),
            ("accuracy", "f1"),
            ("validation",),
        ),
        TaskSpec(
            "stsb", ("sentence1", "sentence2"), None, ("pearson", "spearman"), ("validation",), score_range=(0.0, 5.0)
        ),
        TaskSpec(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            ("validation_matched", "validation_mismatched"),
        ),
        TaskSpec(
            "qnli",
            ("question", "sentence"),
            ("entailment", "not_entailment"),
            ("accuracy",),
            ("validation",),
        ),
        TaskSpec(
            "rte",
            ("sentence1", "sentence2"),
            ("entailment", "not_entailment"),
            ("accuracy",),
            ("validation",),
        ),
        TaskSpec(
            "qqp",
            ("question1", "question2"),
            ("not_duplicate", "duplicate"),
            ("accuracy", "f1"),
            ("validation",),
        ),
        TaskSpec(
            "subj",
            ("text",),
            ("objective", "subjective"),
            ("accuracy",),
            ("validation",),
            hub=("SetFit/subj", None),
        ),
    ]
}


def get_task(name: str) -> TaskSpec:
    """The spec of ``name``, or a ``ValueError`` listing the known tasks."""
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}. Known tasks: {', '.join(TASKS)}.") from None


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics from logits (or scores, for regression) and gold labels.

    Computed with scikit-learn / SciPy: MCC (CoLA), accuracy, F1 of the positive class (MRPC, QQP),
    Pearson and Spearman correlation (STS-B).
    """
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if task.is_regression:
        scores = predictions.reshape(-1).astype(np.float64)
        if len(scores) < 2:  # a correlation needs two points; report it as undefined, not as an error
            return {"pearson": float("nan"), "spearman": float("nan")}
        return {
            "pearson": float(pearsonr(scores, labels.astype(np.float64))[0]),
            "spearman": float(spearmanr(scores, labels.astype(np.float64))[0]),
        }
    pred = predictions.argmax(-1) if predictions.ndim > 1 else predictions
    out: dict[str, float] = {}
    for metric in task.metrics:
        if metric == "mcc":
            out["mcc"] = float(matthews_corrcoef(labels, pred))
        elif metric == "accuracy":
            out["accuracy"] = float(accuracy_score(labels, pred))
        elif metric == "f1":
            out["f1"] = float(f1_score(labels, pred))
    return out
