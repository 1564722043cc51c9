"""SpikeGPT's WKV, token loop against the parallel chunked scan, side by side in one process.

Two measurements, forward + backward, the two implementations alternated: the WKV alone at
batch x tokens x channels, and a whole SpikeGPT training step (random init, a 2-class head) of
the given depth and width (the 216M checkpoint: 18 layers x 768; the LIF still loops over tokens).
Prints milliseconds (best of rounds) and loop/scan per shape.

    python scripts/bench_wkv.py                                   # CUDA if available, else CPU
    python scripts/bench_wkv.py --tokens 64 256 --model 2x128 --batch 2     # a quick look on CPU
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from spikelora.models.spikegpt import SpikeGPT, SpikeGPTConfig, wkv


def best_ms(fn: Callable[[], None], device: torch.device, steps: int) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / steps


def wkv_step(impl: str, batch: int, tokens: int, channels: int, device: torch.device) -> Callable[[], None]:
    g = torch.Generator(device="cpu").manual_seed(0)
    leaves = [torch.randn(channels, generator=g), torch.randn(channels, generator=g)]
    leaves += [torch.randn(batch, tokens, channels, generator=g) for _ in range(2)]
    leaves = [t.to(device).requires_grad_() for t in leaves]

    def run() -> None:
        wkv(-torch.exp(leaves[0]), *leaves[1:], impl).sum().backward()

    return run


def model_step(impl: str, layers: int, embd: int, batch: int, tokens: int, device: torch.device):
    torch.manual_seed(0)
    config = SpikeGPTConfig(n_layer=layers, n_embd=embd, vocab_size=50277, ctx_len=tokens, n_classes=2, wkv=impl)
    model = SpikeGPT(config).to(device).train()
    ids = torch.randint(0, 50277, (batch, tokens), device=device)
    labels = torch.randint(0, 2, (batch,), device=device)

    def run() -> None:
        model(ids, labels=labels).loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=768, help="WKV alone: channels")
    parser.add_argument("--model", default="18x768", help="layers x width of the whole-model step ('' skips it)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    for tokens in args.tokens:
        cases = {"wkv": lambda impl, T=tokens: wkv_step(impl, args.batch, T, args.channels, device)}
        if args.model:
            layers, embd = (int(v) for v in args.model.split("x"))
            cases[f"spikegpt {args.model}"] = lambda impl, T=tokens, n=layers, c=embd: model_step(
                impl, n, c, args.batch, T, device
            )
        for name, make in cases.items():
            times: dict[str, list[float]] = {"loop": [], "scan": []}
            for _ in range(args.rounds):
                for impl in times:
                    times[impl].append(round(best_ms(make(impl), device, args.steps), 2))
            row = {**times, "loop/scan (best of rounds)": round(min(times["loop"]) / min(times["scan"]), 3)}
            print(f"{name} B={args.batch} T={tokens} {device.type}", json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
