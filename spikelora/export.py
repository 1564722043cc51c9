"""``python -m spikelora.export RUN_DIR --out DIR [--push REPO_ID]``: a hub-ready adapter folder.

Every saved adapter gets a model card (``README.md``) when its run completes; ``export`` copies
the adapter with its card into a self-contained folder, names the base model by its hub id in
``adapter_config.json`` (never a local path), and can upload the folder where a network exists.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from .experiment.record import ADAPTER, ADAPTER_BEST, RecordError, RunDir, write_atomic

CARD = "README.md"


def base_model_id(record: dict[str, Any]) -> str | None:
    """The base model's hub id: ``model.hub_id`` if set, the hub id it was loaded by, or the one its
    local ``config.json`` names; None for models built from a config (``tiny``) or unknown ones."""
    provenance = record.get("provenance") or {}
    if (provenance.get("model") or {}).get("hub_id"):
        return str(provenance["model"]["hub_id"])
    model = (provenance.get("canonical_config") or {}).get("model") or {}
    source = model.get("name_or_path")
    if not source:
        return None
    path = Path(str(source)).expanduser()
    if not path.exists():
        return str(source)
    try:
        named = json.loads((path / "config.json").read_text()).get("_name_or_path", "")
    except (OSError, json.JSONDecodeError):
        return None
    return named if named and not Path(named).expanduser().exists() and not named.startswith("/") else None


def _description(record: dict[str, Any]) -> str:
    gate = record.get("gate") or "lif"
    if record.get("adapter") == "spike" and gate == "lif":
        return (
            "A SpikeLoRA adapter: LoRA whose low-rank activations are gated by a leaky integrate-and-fire "
            "neuron, `ΔW x = scaling · B (h ⊙ S(h))`. It cannot be merged into the base weights."
        )
    if record.get("adapter") in ("spike", "spike_adalora"):
        base = "AdaLoRA" if record.get("adapter") == "spike_adalora" else "LoRA"
        return (
            f"A gated {base} adapter (the `{gate}` gate of the SpikeLoRA gate family on the low-rank "
            "activations). It cannot be merged into the base weights."
        )
    return f"A {record.get('adapter')} adapter trained with the spikelora framework."


def model_card(record: dict[str, Any]) -> str:
    """The card of a run's adapter: what it is, how to load it, and what it scored."""
    base = base_model_id(record)
    adapter = {"spike": "SpikeLoRA", "lora": "LoRA"}.get(record.get("adapter"), record.get("adapter"))
    main = record.get("main_metric", "")
    final = record.get("final") or {}
    rows = [f"| {k} | {v:.4f} |" for k, v in final.items() if isinstance(v, float) and k.startswith("eval")]
    front = ["---", "library_name: peft", "tags:", "- spikelora", "- peft", "- lora", f"- {record.get('task')}"]
    if base:
        front.append(f"base_model: {base}")
    front.append("---")
    lines = [
        *front,
        "",
        f"# {adapter} adapter: {record.get('task')} ({record.get('run_name')})",
        "",
        _description(record),
        "",
        f"- base model: `{base}`" if base else "- base model: not on the hub (built from a config or a local copy)",
        f"- task: {record.get('task')}; rank r = {record.get('r')}"
        + (f"; firing threshold V_θ = {record.get('vth')}" if record.get("vth") is not None else ""),
        f"- main metric {main}: {final.get(main)}",
    ]
    if record.get("eval_sparsity") is not None:
        lines.append(
            f"- sparsity of the gated activations (evaluation, mean over modules): {record['eval_sparsity']:.4f}"
        )
    lines += [
        "",
        "## Load it",
        "",
        "The `SPIKELORA` type is known to PEFT only once `spikelora` is imported; without it loading fails",
        "with `KeyError: 'SPIKELORA'`.",
        "",
        "```bash",
        "pip install spikelora",
        "```",
        "",
        "```python",
        "import spikelora  # registers the SPIKELORA type with PEFT",
        "from peft import PeftModel",
        "from transformers import AutoModelForSequenceClassification",
        "",
        f'base = AutoModelForSequenceClassification.from_pretrained("{base or "BASE_MODEL"}", num_labels=...)',
        'model = PeftModel.from_pretrained(base, "THIS_FOLDER_OR_REPO")',
        "```",
        "",
        "## Evaluation (last epoch)",
        "",
        "| metric | value |",
        "|---|---|",
        *rows,
        "",
    ]
    return "\n".join(lines)


def write_card(adapter_dir: Path, record: dict[str, Any]) -> None:
    write_atomic(Path(adapter_dir) / CARD, model_card(record))


def export(run_dir: str | Path, out: str | Path, best: bool = False) -> Path:
    """Copy a complete run's adapter and card into ``out``; the base model named by hub id."""
    run = RunDir(run_dir)
    record = run.load()  # a record whose kept adapter went missing is corrupt: refused here
    source = run.path / (ADAPTER_BEST if best else ADAPTER)
    if not (source / "adapter_config.json").is_file():
        if record.get("adapter") == "full":
            why = "full fine-tuning keeps no adapter (and no trained weights)"
        elif isinstance(record.get("kept_weights"), str):
            why = f"the run kept {record['kept_weights'].removeprefix('none: ')}"
        elif best:
            why = "no best adapter was kept (save_best=false)"
        else:
            why = "it is missing from the run directory (deleted, or the run had save_adapter=false)"
        raise RecordError(f"{source}: no saved adapter: {why}.")
    out = Path(out)
    inside = out.expanduser().resolve()
    if inside == run.path.resolve() or run.path.resolve() in inside.parents:
        raise RecordError(f"--out {out} is inside the run directory {run.path}: choose a folder outside the record.")
    if out.exists() and any(out.iterdir()):
        raise RecordError(f"{out} exists and is not empty; choose a new folder.")
    shutil.copytree(source, out, dirs_exist_ok=True)
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_model_id(record)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    (out / CARD).write_text(model_card(record))
    summary = {
        k: record.get(k) for k in ("run_name", "task", "adapter", "r", "vth", "main_metric", "final", "identity")
    }
    (out / "spikelora_run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spikelora.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a complete run directory (results/<experiment>/<run>)")
    parser.add_argument("--out", required=True, help="the folder to write (new or empty)")
    parser.add_argument("--best", action="store_true", help="export adapter_best/ (runs with save_best=true)")
    parser.add_argument("--push", metavar="REPO_ID", help="also upload the folder to this hub repository")
    args = parser.parse_args(argv)
    try:
        out = export(args.run_dir, args.out, best=args.best)
    except RecordError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported to {out}")
    if args.push:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.push, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=args.push)
        print(f"pushed to {args.push}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
