"""Build what a run trains from its config: task data (tokenised), model, tokenizer and adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .plan import Plan
from .tasks import TaskSpec, get_task


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
    from .data import task_files

    return [data_dir / n for n in task_files(spec)]


def _cap(data: Any, max_train: int | None, max_eval: int | None, spec: TaskSpec) -> Any:
    """The first rows only (``max_train_samples`` / ``max_eval_samples``), for quick looks."""
    for split, cap in [("train", max_train)] + [(s, max_eval) for s in spec.eval_splits]:
        if cap is not None and cap < len(data[split]):
            data[split] = data[split].select(range(cap))
    return data


def split_seed_of(setting: int | str, seed: int) -> int:
    """The seed of the train/validation split of tasks without one (Subj): fixed, or ``"seed"`` = the run's seed."""
    return int(seed) if setting == "seed" else int(setting)


def build(cfg: DictConfig, plan: Plan) -> Built:
    from .apply import apply_adapter, count_parameters
    from .data import load_task_data, source_fingerprint, tokenize_task
    from .models import build_model_and_tokenizer
    from .ops import track_ops
    from .provenance import files_sha256, model_fingerprint
    from .synthetic import write_synthetic

    spec = get_task(plan.task)
    data_dir = cfg.task.data_dir
    if cfg.task.get("synthetic", False):
        if data_dir is None:
            raise ValueError("task.synthetic=true needs task.data_dir: where to write the generated files.")
        write_synthetic(spec.name, data_dir)
    split_seed = split_seed_of(cfg.task.get("split_seed", 0), plan.seed)
    raw = load_task_data(spec, data_dir, split_seed=split_seed)
    if data_dir is not None:
        data_id = {"files_sha256": files_sha256(data_files(spec, Path(str(data_dir)).expanduser()))}
    else:
        data_id = {"hub": list(spec.hub), "fingerprints": {s: d._fingerprint for s, d in raw.items()}}
    data_id["split_seed"] = split_seed
    model, tokenizer = build_model_and_tokenizer(cfg.model, spec, seed=plan.seed)
    model_id = model_fingerprint(cfg.model, model)
    cache_dir = cfg.cache_dir if cfg.cache_dir else None
    data, from_cache = tokenize_task(
        raw, tokenizer, spec, plan.max_length, cache_dir, source_fingerprint(spec, data_dir, split_seed)
    )
    data = _cap(data, cfg.get("max_train_samples"), cfg.get("max_eval_samples"), spec)
    model = apply_adapter(model, cfg.adapter, cfg.model.target_modules, cfg.model.get("modules_to_save"))
    # Operation counts over real tokens (spikelora.ops); full fine-tuning counts the same linears.
    targets = cfg.model.target_modules
    full_targets = targets if isinstance(targets, str) else list(targets)
    track_ops(model, target_modules=full_targets if plan.adapter == "full" else None)
    trainable, total = count_parameters(model)
    facts = {
        "train_samples": len(data["train"]),
        "eval_samples": {s: len(data[s]) for s in spec.eval_splits},
        "trainable_params": trainable,
        "total_params": total,
        "data": data_id,
        "model_id": model_id,
    }
    return Built(spec, data, model, tokenizer, facts, from_cache)
