"""Build what a run trains from its :class:`~spikelora.experiment.plan.Plan`: task data
(tokenised), model, tokenizer and adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ops import track_ops
from .adapters import count_parameters
from .data import DataError, load_task_data, task_files, tokenize_task
from .plan import DataPlan, Plan
from .provenance import files_sha256
from .synthetic import write_synthetic
from .tasks import TaskSpec


@dataclass
class Built:
    spec: TaskSpec
    data: Any  # DatasetDict, tokenised
    model: Any
    tokenizer: Any
    facts: dict[str, Any] = field(default_factory=dict)  # sizes and fingerprints for the record
    tokenized_from_cache: bool = False

    @property
    def eval_sets(self) -> dict[str, Any]:
        return {s: self.data[s] for s in self.spec.eval_splits}


def data_files(spec: TaskSpec, data_dir: Path) -> list[Path]:
    return [data_dir / n for n in task_files(spec)]


def _cap(data: Any, max_train: int | None, max_eval: int | None, spec: TaskSpec) -> Any:
    """The first rows only (``max_train_samples`` / ``max_eval_samples``), for quick looks."""
    for split, cap in [("train", max_train)] + [(s, max_eval) for s in spec.eval_splits]:
        if cap is not None and cap < len(data[split]):
            data[split] = data[split].select(range(cap))
    return data


def read_data(plan: DataPlan) -> tuple[Any, dict[str, Any]]:
    """The raw splits and what identifies them, as read: the files' sha256 before and after reading
    must equal those the run was planned (and named) with, or the run stops before training."""
    spec = plan.task
    if plan.synthetic:
        write_synthetic(spec.name, plan.data_dir)
    if plan.data_dir is None:
        raw = load_task_data(spec, None, split_seed=plan.split_seed)
        return raw, {"hub": list(spec.hub), "fingerprints": {s: d._fingerprint for s, d in raw.items()}}
    paths = data_files(spec, plan.data_dir)
    before = files_sha256(paths)
    raw = load_task_data(spec, plan.data_dir, split_seed=plan.split_seed)
    after = files_sha256(paths)
    planned = plan.content.get("files_sha256")
    for name, digest in after.items():
        if before.get(name) != digest or (planned is not None and planned.get(name) != digest):
            raise DataError(
                f"{plan.data_dir / name} changed after this run was planned (its sha256 is now {digest[:12]}…): "
                "re-launch, so that the run is named after the data it reads."
            )
    return raw, {"files_sha256": after}


def build(plan: Plan) -> Built:
    spec = plan.spec
    raw, data_id = read_data(plan.data)
    data_id["split_seed"] = plan.data.split_seed
    model, tokenizer = plan.backbone.build(spec, seed=plan.seed)
    model = plan.backbone.quantise(model)  # QLoRA (model.quantization); unchanged for a float base
    model_id = plan.backbone.fingerprint(model)
    source = {"content": data_id.get("files_sha256") or data_id, "split_seed": plan.data.split_seed}
    data, from_cache = tokenize_task(raw, tokenizer, spec, plan.data.max_length, plan.data.cache_dir, source)
    data = _cap(data, plan.data.max_train_samples, plan.data.max_eval_samples, spec)
    notes = list(plan.warnings)
    lengths = data["train"]["length"]
    cut = sum(n >= plan.data.max_length for n in lengths) / max(len(lengths), 1)
    if cut > 0.5:
        notes.append(
            f"max_length={plan.data.max_length} truncates {cut:.0%} of the training examples: most inputs are cut short"
        )
    targets, to_save = plan.backbone.target_modules, plan.backbone.modules_to_save
    model = plan.adapter_spec.apply(model, targets, to_save)
    # Operation counts over real tokens (spikelora.ops); full fine-tuning counts the same linears.
    track_ops(model, target_modules=targets if plan.adapter == "full" else None)
    trainable, total = count_parameters(model)
    facts = {
        "train_samples": len(data["train"]),
        "eval_samples": {s: len(data[s]) for s in spec.eval_splits},
        "trainable_params": trainable,
        "total_params": total,
        "data": data_id,
        "model_id": model_id,
        "warnings": notes,
    }
    return Built(spec, data, model, tokenizer, facts, from_cache)
