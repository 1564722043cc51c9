"""Read every run record under a results directory into one pandas table, and aggregate over seeds."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ..experiment.record import gate_variant, scan

# Per-run values the tables use, from metrics.json "final" (last evaluation). Scores are in
# percent, as in the paper; losses, gaps raw; sparsity in percent.
PERCENT = ("main", "mcc", "accuracy", "f1", "pearson", "spearman", "acc_m", "acc_mm", "sparsity", "sparsity_reference")

# The paper's models: DeBERTaV3-base on GLUE, SpikeGPT-216M on Subj (model_id as :func:`identity` spells it).
PAPER_MODELS = {"glue": "deberta-v3-base", "subj": "spikegpt-216m"}
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "mnli", "qnli", "rte", "qqp")


@dataclass
class Runs:
    """Complete runs (one row each) and what was left out."""

    table: pd.DataFrame
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (run dir, status)


def _final_values(m: dict, gap: str) -> dict:
    final = m.get("final") or {}
    if m.get("task") == "mnli":
        prefix = "eval_validation_matched"
        values = {
            "acc_m": final.get("eval_validation_matched_accuracy"),
            "acc_mm": final.get("eval_validation_mismatched_accuracy"),
            "accuracy": final.get("eval_validation_matched_accuracy"),
        }
    else:
        prefix = "eval"
        values = {k: final.get(f"eval_{k}") for k in ("mcc", "accuracy", "f1", "pearson", "spearman")}
    values["eval_loss"] = final.get(f"{prefix}_loss")
    values["gen_gap"] = final.get(f"{prefix}_gen_gap_{gap}")
    values["sparsity"] = final.get(f"{prefix}_sparsity")
    # The authors' sparsity definition (last eval batch, padding counted), when the run recorded it.
    values["sparsity_reference"] = final.get(f"{prefix}_sparsity_reference")
    train, timing = m.get("train") or {}, m.get("timing") or {}
    values["runtime_s"] = m.get("runtime_s", timing.get("runtime_s"))
    values["train_runtime_s"] = train.get("train_runtime_s", timing.get("train_runtime_s"))
    values["global_step"] = train.get("global_step")
    # The task's main score (the paper's column: MCC, accuracy, STS-B Pearson, MNLI matched), in percent.
    main = final.get(m.get("main_metric") or "")
    values["main"] = None if main is None else float(main)
    for k in PERCENT:
        if values.get(k) is not None:
            values[k] = 100.0 * values[k]
    return values


def _config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _model_id(model: dict, fallback: str | None) -> str:
    kind = model.get("kind")
    if kind == "hf" and (model.get("hub_id") or model.get("name_or_path")):
        # A local copy named by its hub id (model.hub_id) reads as that model, not as its folder.
        return Path(str(model.get("hub_id") or model["name_or_path"]).rstrip("/")).name.lower()
    if kind == "spikegpt":
        ckpt = model.get("checkpoint")
        if ckpt is None:
            name = f"spikegpt-random(l{model.get('n_layer')},d{model.get('n_embd')})"
        else:
            name = Path(str(ckpt).rstrip("/")).name.lower().removesuffix(".pth")
            name = "spikegpt-216m" if "216m" in name else name
        return name + _spikegpt_protocol(model)
    if kind == "tiny":
        return f"tiny-deberta(h{model.get('hidden_size')},l{model.get('num_hidden_layers')})"
    if kind == "tiny_decoder":
        return f"tiny-{model.get('family')}(h{model.get('hidden_size')},l{model.get('num_hidden_layers')})"
    return str(fallback)


def _quantised(model: dict) -> str:
    """``+nf4``, ``+nf4-bfloat16``, ``+int8`` for a quantised base ('' for full precision): never pooled with it."""
    scheme = model.get("quantization")
    if not scheme:
        return ""
    dtype = model.get("compute_dtype") or "float32"
    return f"+{scheme}" if dtype == "float32" else f"+{scheme}-{dtype}"


def _spikegpt_protocol(model: dict) -> str:
    """'' for the authors' protocol (logits at the last position, the head adapted too); else a tag,
    so that runs of the cleaner variant never share a row or a paper column with the authors'."""
    targets = model.get("target_modules") or []
    head = "head" in (targets if isinstance(targets, list) else [targets])
    if model.get("pooling") == "last_position" and head:
        return ""
    return f"[{model.get('pooling')}{',head-adapted' if head else ''}]"


def _short_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def identity(m: dict, run_dir: str | Path | None = None) -> dict:
    """What a run was trained on, beyond its hyperparameters: model, data and training length.

    ``model_id`` names the weights (``deberta-v3-base`` for the hub id or any local copy of it;
    tiny and random models by their shape; ``@hash`` of the weight files or hub commit when the
    record's ``provenance`` has them); ``data_id`` the data (``hub``, ``files`` or ``synthetic``,
    the train/eval sizes, the split seed, ``sha=`` of the record's data provenance);
    ``max_steps`` a step cap (-1: none). A ``model_id``/``data_id`` the record carries itself wins.
    ``paper_model`` says whether the run used the paper's model and real data.
    """
    canonical = (m.get("provenance") or {}).get("canonical_config")
    cfg = canonical if isinstance(canonical, dict) else (_config(Path(run_dir)) if run_dir is not None else {})
    model, task = cfg.get("model") or {}, cfg.get("task") or {}
    prov = m.get("provenance") or {}
    pmodel = prov.get("model") if isinstance(prov.get("model"), dict) else {}
    if not model and pmodel:
        model = {"kind": pmodel.get("kind"), "name_or_path": pmodel.get("source"), "checkpoint": pmodel.get("source")}
    # A local source is not in the canonical config (its content is in the identity): its path is the
    # provenance's source.
    source_key = {"hf": "name_or_path", "spikegpt": "checkpoint"}.get(model.get("kind"))
    if source_key and source_key not in model and pmodel.get("source"):
        model = {**model, source_key: pmodel["source"]}
    if pmodel.get("hub_id") and not model.get("hub_id"):  # hub_id is not part of the canonical config
        model = {**model, "hub_id": pmodel["hub_id"]}
    model_id = m.get("model_id") if isinstance(m.get("model_id"), str) else _model_id(model, m.get("model"))
    if "None" in model_id and pmodel.get("config_sha256"):  # no config.yaml: a config-built model by its hash
        model_id = f"{pmodel.get('name', model.get('kind'))}#{pmodel['config_sha256'][:8]}"
    if not isinstance(m.get("model_id"), str):
        model_id += _quantised(model)
    weights = pmodel.get("files_sha256") or pmodel.get("hub_commit")
    if weights and not isinstance(m.get("model_id"), str):
        model_id += f"@{_short_hash(weights)}"
    if isinstance(m.get("data_id"), str):
        data_id = m["data_id"]
    else:
        pdata = prov.get("data") if isinstance(prov.get("data"), dict) else {}
        if task.get("synthetic"):
            source = "synthetic"
        elif "files_sha256" in pdata or "hub" in pdata:  # what the run read (task.data_dir is not in the identity)
            source = "files" if "files_sha256" in pdata else "hub"
        elif task:
            source = "hub" if task.get("data_dir") is None else "files"
        else:
            source = "unknown"
        evals = m.get("eval_samples")
        n_eval = sum(evals.values()) if isinstance(evals, dict) else evals
        data_id = f"{source} n={m.get('train_samples')}/{n_eval}"
        if "split_seed" in task:
            data_id += f" split={task['split_seed']}"
        if prov.get("data"):
            data_id += f" sha={_short_hash(prov['data'])}"
    max_steps = (cfg.get("trainer") or {}).get("max_steps", -1)
    t = m.get("task")
    paper = PAPER_MODELS.get("glue" if t in GLUE_TASKS else t)
    return {
        "model_id": model_id,
        "data_id": data_id,
        "max_steps": -1 if max_steps is None else max_steps,
        "epochs": m.get("epochs"),
        "batch_size": m.get("batch_size"),
        "paper_model": bool(
            paper == model_id.split("@")[0]
            and not data_id.startswith(("synthetic", "unknown"))
            and (t != "subj" or " split=seed" in data_id)  # Table 4: the authors' split per seed
        ),
        "record": m,
    }


def gate_of(m: dict) -> str | None:
    """The gate of a gated run (``lif`` for records made before the gate family), else None."""
    if m.get("adapter") not in ("spike", "spike_adalora"):
        return None
    adapter = ((m.get("provenance") or {}).get("canonical_config") or {}).get("adapter") or {}
    gate = m.get("gate") or adapter.get("gate") or "lif"
    return f"{gate}+two_sided" if adapter.get("two_sided") else str(gate)


def method_label(m: dict) -> str | None:
    """The method as tables and claims know it: ``spike`` is SpikeLoRA with the paper's LIF gate and
    settings only; another gate is ``spike:<gate>``, other gate settings a bracketed variant
    (``spike[temporal,soft_reset]``, ``spike:relu[learnable_vth]``), so that no table or claim about
    SpikeLoRA ever pools them in."""
    gate = gate_of(m)
    label = m.get("adapter")
    if gate is None:
        return label
    if label == "spike" and gate != "lif":
        label = f"spike:{gate}"
    adapter = ((m.get("provenance") or {}).get("canonical_config") or {}).get("adapter") or {}
    variant = gate_variant(adapter)
    return f"{label}[{','.join(variant)}]" if variant else label


def collect(results_dir: str | Path, gap: str = "ref") -> Runs:
    """Every ``<experiment_name>/<run_name>/metrics.json`` below ``results_dir``.

    ``gap`` chooses the generalisation gap: ``"ref"`` (the authors' definition, the paper's
    tables) or ``"epoch"`` (mean over the final epoch).
    """
    records, excluded = scan(results_dir)
    rows = []
    for run, m in records:
        row = {
            "experiment": m.get("experiment"),
            "run_dir": str(run.path),
            "run_name": m.get("run_name"),
            "task": m.get("task"),
            "model": m.get("model"),
            "adapter": method_label(m),
            "adapter_type": m.get("adapter"),
            "gate": gate_of(m),
            "r": m.get("r"),
            "vth": m.get("vth"),
            "lr": m.get("lr"),
            "dropout": m.get("dropout"),
            "seed": m.get("seed"),
            "ops": m.get("ops"),
        }
        row.update(_final_values(m, gap))
        row.update(identity(m, run.path))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(columns=["experiment", "task", "adapter", "r", "vth", "lr", "dropout", "seed"])
    return Runs(table, excluded)


@dataclass(frozen=True)
class Stat:
    """Mean ± sample std over the seeds present."""

    mean: float
    std: float
    n: int

    @property
    def missing(self) -> bool:
        return self.n == 0


MISSING = Stat(math.nan, math.nan, 0)


def stat(values: pd.Series | list) -> Stat:
    s = pd.Series(values, dtype="float64").dropna()
    if s.empty:
        return MISSING
    return Stat(float(s.mean()), float(s.std(ddof=1)) if len(s) > 1 else math.nan, len(s))


def select(table: pd.DataFrame, **where) -> pd.DataFrame:
    """Rows matching every ``column=value`` (floats compared with a tolerance)."""
    if table.empty:
        return table
    mask = pd.Series(True, index=table.index)
    for col, value in where.items():
        if col not in table:
            return table.iloc[0:0]
        if isinstance(value, float):
            mask &= (pd.to_numeric(table[col], errors="coerce") - value).abs() <= 1e-12 * max(1.0, abs(value))
        else:
            mask &= table[col] == value
    return table[mask]
