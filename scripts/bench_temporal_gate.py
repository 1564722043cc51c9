"""The temporal SpikeLoRA gate: its token loop against SpikingJelly's multi-step LIF, side by side.

    python scripts/bench_temporal_gate.py                     # CPU
    python scripts/bench_temporal_gate.py --device cuda       # the fused kernel (Triton) on a GPU

Times one forward + backward of ``LIFGate(mode="temporal")`` on ``(batch, tokens, r)`` activations
with a right-padded token mask (a quarter of each row padded), alternating the two paths for
``--rounds`` rounds, and prints the median times and their ratio (fused / loop).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spikelora import LIFGate, token_mask


def _time(gate: LIFGate, h: torch.Tensor, mask: torch.Tensor, steps: int) -> float:
    times = []
    for _ in range(steps):
        x = h.detach().requires_grad_()
        if h.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with token_mask(mask):
            gate(x).sum().backward()
        if h.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["32x128x8", "32x512x8", "8x1024x16"], help="batch x tokens x r")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"device {args.device}; median of {args.steps} forward+backward per round, {args.rounds} rounds")
    print(f"{'shape':<12} {'loop ms':>9} {'fused ms':>9} {'fused/loop':>10}")
    for shape in args.shapes:
        b, t, r = (int(v) for v in shape.split("x"))
        h = torch.randn(b, t, r, device=args.device)
        mask = torch.ones(b, t, dtype=torch.bool, device=args.device)
        mask[:, (3 * t) // 4 :] = False
        gates = {impl: LIFGate(mode="temporal", temporal_impl=impl) for impl in ("loop", "spikingjelly")}
        for gate in gates.values():
            _time(gate, h, mask, 2)  # warm-up (kernel compilation on CUDA)
        times = {impl: [] for impl in gates}
        for _ in range(args.rounds):
            for impl, gate in gates.items():
                times[impl].append(_time(gate, h, mask, args.steps))
        loop, fused = (statistics.median(times[k]) * 1e3 for k in ("loop", "spikingjelly"))
        print(f"{shape:<12} {loop:>9.2f} {fused:>9.2f} {fused / loop:>10.3f}")


if __name__ == "__main__":
    main()
