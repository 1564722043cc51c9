"""Training-step time of PEFT LoRA vs SpikeLoRA across model and batch shapes (BERT-style encoders).

The gate adds a few element-wise kernels per adapted module. Where a step is dominated by kernel
launches (a small model, a small batch, on a GPU) that doubles the step; where matrix products
dominate it costs little. This prints both methods' step times per shape and their ratio, the two
methods alternated in one process (r = 8, rsLoRA, the six BERT linears of every layer, AdamW;
random weights from a config, nothing downloaded).

    python scripts/bench_step_shapes.py                 # CUDA if available, else CPU
    python scripts/bench_step_shapes.py --steps 5 --shapes 384x6x8x64
    python scripts/bench_step_shapes.py --modes eager default reduce-overhead   # torch.compile too

``--modes``: ``eager``, or a ``torch.compile`` mode (``default``, ``reduce-overhead``: CUDA graphs,
``max-autotune``), the model compiled after ``get_peft_model`` as PEFT recommends; the first
steps (compilation) are not timed. Each mode's ratio is measured with both methods in that mode.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertForSequenceClassification

from spikelora import SpikeLoraConfig

TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
SHAPES = ["384x6x32x128", "384x6x128x256", "768x12x32x256"]  # hidden x layers x batch x tokens


def build(kind: str, hidden: int, layers: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=12, intermediate_size=4 * hidden
    )
    common = dict(r=8, lora_alpha=8**0.5, use_rslora=True, target_modules=TARGETS, task_type="SEQ_CLS")
    peft_config = LoraConfig(**common) if kind == "lora" else SpikeLoraConfig(**common, v_threshold=0.1)
    return get_peft_model(BertForSequenceClassification(config), peft_config).to(device).train()


def step_ms(kind: str, shape: str, device: torch.device, steps: int, mode: str = "eager") -> float:
    hidden, layers, batch, tokens = (int(v) for v in shape.split("x"))
    peft_model = build(kind, hidden, layers, device)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    model = peft_model if mode == "eager" else torch.compile(peft_model, mode=mode)
    x = torch.randint(0, 30522, (batch, tokens), device=device)
    y = torch.randint(0, 2, (batch,), device=device)

    def one() -> None:
        model(input_ids=x, labels=y).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="hidden x layers x batch x tokens")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two methods")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", nargs="+", default=["eager"], help="eager and/or torch.compile modes")
    args = parser.parse_args()
    device = torch.device(args.device)
    out = {}
    for shape in args.shapes:
        for mode in args.modes:
            times: dict[str, list[float]] = {"lora": [], "spike": []}
            for _ in range(args.rounds):
                for kind in ("lora", "spike"):
                    times[kind].append(round(step_ms(kind, shape, device, args.steps, mode), 2))
            key = f"{shape} {mode}"
            out[key] = {**times, "spike/lora (best of rounds)": round(min(times["spike"]) / min(times["lora"]), 3)}
            print(key, json.dumps(out[key]), flush=True)


if __name__ == "__main__":
    main()
