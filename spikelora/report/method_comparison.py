"""One JSON per complete run in the shape of PEFT's own benchmark (``method_comparison/*/results``):
``run_info`` (when, how long, the experiment, the train config, the full PEFT config, the error,
whether the code was dirty), ``train_info`` (accelerator memory where recorded, train time,
adapter file size, parameter counts, status, the metrics of every evaluation) and ``meta_info``
(model and data fingerprints, package versions, the system), so SpikeLoRA's runs can sit beside
PEFT's. Values this runner does not record (accelerator memory) are null, never guessed."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from ..experiment.record import ADAPTER, RunDir, scan, write_json
from .collect import GLUE_TASKS

SCHEMA_NOTE = "spikelora's run record in the shape of PEFT's method_comparison results (memory is not recorded: null)"


def _peft_config(run: RunDir, record: dict[str, Any]) -> dict[str, Any] | None:
    """The PEFT config as PEFT saved it with the adapter, or (none kept) the run's adapter settings."""
    path = run.path / ADAPTER / "adapter_config.json"
    if path.is_file():
        return json.loads(path.read_text())
    adapter = ((record.get("provenance") or {}).get("canonical_config") or {}).get("adapter")
    peft_type = {"spike": "SPIKELORA", "lora": "LORA"}.get(str(record.get("adapter")))
    return {"peft_type": peft_type, "saved": False, **(adapter or {})}


def _split_label(record: dict[str, Any], prefix: str) -> str:
    """GLUE's evaluation splits are its dev sets (the test labels are not public): said so."""
    split = prefix.removeprefix("eval_") if prefix != "eval" else "validation"
    return f"{split} (GLUE dev set)" if record.get("task") in GLUE_TASKS else f"{split} (held out from train)"


def _evaluations(run: RunDir, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every evaluation of the history, PEFT-style keys: step, ``valid <metric>``, train loss, sparsity."""
    history = run.history()
    train_logs = [(r["step"], r.get("loss")) for r in history if r.get("type") == "train_log"]
    out = []
    for r in history:
        if r.get("type") != "eval":
            continue
        prefix = r.get("split", "eval")
        row: dict[str, Any] = {"step": r["step"], "epoch": r.get("epoch"), "split": _split_label(record, prefix)}
        for key, value in r.items():
            if key.startswith(f"{prefix}_") and isinstance(value, (int, float)):
                name = key.removeprefix(f"{prefix}_")
                if name in ("runtime", "samples_per_second", "steps_per_second"):
                    row[f"eval {name.replace('_', ' ')}"] = value
                else:
                    row[f"valid {name.replace('_', ' ')}"] = value
        logged = [loss for step, loss in train_logs if step <= r["step"] and loss is not None]
        row["train loss"] = logged[-1] if logged else None
        out.append(row)
    return out


def method_comparison_record(run: RunDir, record: dict[str, Any]) -> dict[str, Any]:
    prov = record.get("provenance") or {}
    canonical = prov.get("canonical_config") or {}
    trainer = canonical.get("trainer") or {}
    timing = record.get("timing") or {}
    model = prov.get("model") or {}
    data = prov.get("data") or {}
    versions = prov.get("versions") or {}
    adapter_sizes = (record.get("files") or {}).get(f"{ADAPTER}/") or {}
    weights = {k: v for k, v in adapter_sizes.items() if k.endswith((".safetensors", ".bin"))}
    git = prov.get("git") or {}
    return {
        "run_info": {
            "created_at": timing.get("started_utc"),
            "total_time": timing.get("runtime_s"),
            "experiment_name": f"{record.get('adapter')}/{record.get('run_name')}",
            "peft_branch": None,
            "train_config": {
                "model_id": model.get("hub_id") or model.get("source") or record.get("model"),
                "task": record.get("task"),
                "dtype": "bfloat16" if trainer.get("bf16") else ("float16" if trainer.get("fp16") else "float32"),
                "max_seq_length": record.get("max_length"),
                "batch_size": record.get("batch_size"),
                "batch_size_eval": trainer.get("per_device_eval_batch_size"),
                "max_steps": record.get("max_steps"),
                "epochs": record.get("epochs"),
                "compile": bool(trainer.get("torch_compile", False)),
                "seed": record.get("seed"),
                "grad_norm_clip": trainer.get("max_grad_norm"),
                "optimizer_type": trainer.get("optim"),
                "optimizer_kwargs": {"lr": record.get("lr"), "weight_decay": trainer.get("weight_decay")},
                "lr_scheduler": trainer.get("lr_scheduler_type"),
                "warmup": trainer.get("warmup_steps"),
            },
            "peft_config": _peft_config(run, record),
            "error_msg": "",
            "git_commit": git.get("commit"),
            "dirty": git.get("dirty"),
            "spikelora_run_dir": str(run.path),
        },
        "train_info": {
            "cuda_memory_reserved_avg": None,
            "cuda_memory_max": None,
            "cuda_memory_reserved_99th": None,
            "train_time": timing.get("train_runtime_s"),
            "file_size": sum(weights.values()) if weights else None,
            "num_trainable_params": record.get("trainable_params"),
            "num_total_params": record.get("total_params"),
            "status": "success",
            "main_metric": record.get("main_metric"),
            "final": record.get("final"),
            "best": record.get("best"),
            "sparsity": record.get("eval_sparsity"),
            "metrics": _evaluations(run, record),
        },
        "meta_info": {
            "model_info": {"sha": model.get("config_sha256"), "files_sha256": model.get("files_sha256")},
            "dataset_info": {record.get("task"): {"files_sha256": data.get("files_sha256"), "hub": data.get("hub")}},
            "package_info": {f"{name}-version": version for name, version in versions.items()},
            "system_info": {"host": prov.get("host"), "platform": prov.get("platform") or platform.platform()},
            "note": SCHEMA_NOTE,
        },
    }


def write_method_comparison(results_dir: str | Path, out: str | Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """One ``<adapter>--<run_name>.json`` per complete run below ``results_dir``; (files, left out)."""
    records, left_out = scan(results_dir)
    out = Path(out)
    written = []
    for run, record in records:
        path = out / f"{record.get('adapter')}--{record.get('run_name')}.json"
        write_json(path, method_comparison_record(run, record))
        written.append(path)
    return written, left_out
