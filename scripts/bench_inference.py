"""Inference time per token and peak memory: base, merged LoRA, unmerged LoRA, SpikeLoRA (dense B and zero-skipping B).

All adapters use r = 8, rsLoRA with α = √8 (scaling 1), on the 72 (12 layers × 6) encoder linears
of a randomly initialised DeBERTaV3-base-shaped classifier (no download); B is random so the
adapters do change the activations. SpikeLoRA's sparsity is set by one global V_θ, calibrated by
bisection to each target level (the measured token-pooled sparsity is printed next to it).

Methods:

``base``         the model without adapters
``merged``       LoRA merged into the weights (``merge_and_unload``): zero adapter cost
``unmerged``     PEFT LoRA as trained: ``W x + B A x``
``spike-dense``  SpikeLoRA as implemented: ``W x + B (h ⊙ S)`` with a dense ``r × d_out`` product,
                 fused into the output (one out-of-place ``addmm``: :func:`spikelora.adapter.add_b`)
``spike-3op``    the same with the product, scaling and sum as three ops (``result + B(h ⊙ S) · s``,
                 PEFT's LoRA form and SpikeLoRA's before the fusion)
``spike-skip``   SpikeLoRA whose B product gathers the fired units and multiplies only those
                 (``nonzero`` → per-fired-unit row of ``Bᵀ`` → ``index_add_`` into the output;
                 :func:`spikelora.set_zero_skip`)

Per sparsity level the methods run in rotated order within each round (one forward each), so
machine noise hits all alike; per-token times are medians and ratios are taken side by side in
the same run. A second table times the B product alone (``N × r → d_out`` for both DeBERTa
output widths): as three ops (out of place, as PEFT's LoRA runs it), fused into the output
(``addmm_``), and zero-skipping, to show where, if anywhere, skipping zeros pays at the op level.
Peak memory per forward is measured with the storage tracker of ``bench_adapter.py`` (CPU) or
the CUDA allocator.

    # from the repository root; PYTHONPATH=. makes this checkout's spikelora the one imported
    PYTHONPATH=. python scripts/bench_inference.py --quick      # 2 layers, 4 x 64 tokens: ~2 min on 2 cores
    PYTHONPATH=. python scripts/bench_inference.py              # 12 layers, 8 x 128 tokens
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import DebertaV2ForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_adapter import TARGETS, PeakMemory

import spikelora
from spikelora import SpikeLoraConfig, SpikeLoraVariant
from spikelora.adapter import ZeroSkipSpikeLoraVariant as ZeroSkipVariant
from spikelora.adapter import zero_skip_b
from spikelora.experiment.backbones import deberta_v3_config

PAIRS = [
    ("base", "merged"),
    ("unmerged", "merged"),
    ("spike-dense", "merged"),
    ("spike-skip", "merged"),
    ("spike-dense", "unmerged"),
    ("spike-skip", "spike-dense"),
    ("spike-dense", "spike-3op"),
]
PAIR_LABELS = ["base/mrg", "unm/mrg", "dense/mrg", "skip/mrg", "dense/unm", "skip/dense", "dense/3op"]


class ThreeOpVariant(SpikeLoraVariant):
    """SpikeLoRA with B as three ops (``result + B(h ⊙ S) · s``), for the fusion's side-by-side figure."""

    @staticmethod
    def forward(module, active_adapter, x, result, **kwargs):
        h = module.lora_A[active_adapter](module.lora_dropout[active_adapter](x))
        gated = module.lora_spike[active_adapter](h)
        return result + module.lora_B[active_adapter](gated) * module.scaling[active_adapter]


def build(args, seed: int = 0) -> DebertaV2ForSequenceClassification:
    torch.manual_seed(seed)
    config = deberta_v3_config(
        vocab_size=args.vocab, num_hidden_layers=args.layers, hidden_size=args.hidden, intermediate_size=4 * args.hidden
    )
    config.num_attention_heads = args.hidden // 64
    return DebertaV2ForSequenceClassification(config).eval()


def randomise_b(model, std: float) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def gates(model):
    return [m for m in model.modules() if isinstance(m, spikelora.LIFGate)]


def set_vth(model, vth: float) -> None:
    for g in gates(model):
        g.v_threshold = float(vth)


def set_variant(model, variant) -> None:
    for m in model.modules():
        if isinstance(m, spikelora.SpikeLoraLinear):
            m.lora_variant["default"] = variant


@torch.no_grad()
def measured_sparsity(model, batch) -> tuple[float, float]:
    spikelora.reset_sparsity(model)
    model(**batch)
    report = spikelora.sparsity_report(model)
    spikelora.reset_sparsity(model)
    return report.pooled, report.mean


def calibrate(model, batch, target: float, iters: int) -> tuple[float, float, float]:
    """Global V_θ whose token-pooled sparsity is closest to ``target`` (bisection; sparsity rises with V_θ)."""
    lo, hi = 0.0, 0.1
    set_vth(model, hi)
    while measured_sparsity(model, batch)[0] < target and hi < 1e4:
        lo, hi = hi, hi * 2
        set_vth(model, hi)
    best = (hi, *measured_sparsity(model, batch))
    for _ in range(iters):
        mid = (lo + hi) / 2
        set_vth(model, mid)
        pooled, mean = measured_sparsity(model, batch)
        if abs(pooled - target) < abs(best[1] - target):
            best = (mid, pooled, mean)
        if pooled < target:
            lo = mid
        else:
            hi = mid
    set_vth(model, best[0])
    return best


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


@torch.no_grad()
def peak_bytes(fn, device) -> int:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        return torch.cuda.max_memory_allocated(device) - base
    with PeakMemory() as tracker:
        fn()
    return tracker.peak


def op_level(args, device, levels) -> None:
    """The B product alone, per sparsity level and output width: as SpikeLoRA runs it, fused, zero-skip."""
    n = args.batch * args.seq
    g = torch.Generator().manual_seed(0)
    print(
        f"\nB product alone: N={n} tokens x r={args.rank} -> d_out; µs per call (median of {args.op_reps}, rotated)\n"
        "  as-is: result + linear(h⊙S, B) * s (three ops, PEFT's LoRA form)   fused: result.addmm_(h⊙S, Bᵀ, alpha=s) "
        "(SpikeLoraVariant runs the out-of-place addmm)   "
        "skip: zero_skip_b"
    )
    print(
        f"{'d_out':>6} {'sparsity':>9} {'as-is µs':>9} {'fused µs':>9} {'skip µs':>9} {'fused/as-is':>12} "
        f"{'skip/as-is':>11}"
    )
    wins = []
    for d_out in (args.hidden, 4 * args.hidden):
        weight = torch.randn(d_out, args.rank, generator=g).to(device)
        h = torch.randn(n, args.rank, generator=g).to(device)
        result = torch.zeros(n, d_out, device=device)
        for level in levels:
            thr = torch.quantile(h.flatten().cpu(), level).item()
            gated = h * (h > thr)

            def as_is(gated=gated, weight=weight, result=result):
                return result + torch.nn.functional.linear(gated, weight) * 1.0

            def fused(gated=gated, weight=weight, result=result):
                return result.addmm_(gated, weight.t(), alpha=1.0)

            def skip(gated=gated, weight=weight, result=result):
                return zero_skip_b(gated, weight, result, 1.0)

            fns = {"as-is": as_is, "fused": fused, "skip": skip}
            times = {k: [] for k in fns}
            for _ in range(3):
                for f in fns.values():
                    f()
            names = list(fns)
            for i in range(args.op_reps):
                for k in names[i % 3 :] + names[: i % 3]:
                    times[k].append(timed(fns[k], device))
            a, f_, s = (statistics.median(times[k]) * 1e6 for k in names)
            if s < a:
                wins.append((d_out, level))
            print(
                f"{d_out:>6} {float((gated == 0).float().mean()):>9.3f} {a:>9.1f} {f_:>9.1f} {s:>9.1f} "
                f"{f_ / a:>12.3f} {s / a:>11.3f}"
            )
    if wins:
        print("zero-skip B beats B as SpikeLoRA runs it, op level, at (d_out, sparsity): " + ", ".join(map(str, wins)))
    else:
        print("zero-skip B never beats B as SpikeLoRA runs it at the op level here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 layers, 4 x 64 tokens, fewer rounds")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=128100)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=None, help="timed forwards per method and level")
    parser.add_argument("--levels", default="0.5,0.75,0.9,0.95,0.99")
    parser.add_argument("--b-std", type=float, default=0.02, help="std of the random B entries")
    parser.add_argument("--calib-iters", type=int, default=None)
    parser.add_argument("--op-reps", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: on a shared, loaded machine multi-threaded GEMMs stall on the busiest core)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quick = dict(batch=4, seq=64, layers=2, rounds=7, calib_iters=6, op_reps=21, vocab=1000)
    full = dict(batch=8, seq=128, layers=12, rounds=5, calib_iters=8, op_reps=51)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k, None) is None or (k == "vocab" and args.vocab == 128100):
            setattr(args, k, v)
    device = torch.device(args.device)
    levels = [float(x) for x in args.levels.split(",")]

    common = dict(r=args.rank, lora_alpha=math.sqrt(args.rank), use_rslora=True, target_modules=TARGETS)
    base = build(args).to(device)
    unmerged = get_peft_model(build(args), LoraConfig(**common)).to(device).eval()
    randomise_b(unmerged, args.b_std)
    merged_src = get_peft_model(build(args), LoraConfig(**common))
    randomise_b(merged_src, args.b_std)
    merged = merged_src.merge_and_unload().to(device).eval()
    spike = get_peft_model(build(args), SpikeLoraConfig(**common, v_threshold=0.1)).to(device).eval()
    randomise_b(spike, args.b_std)
    dense_variant, skip_variant, three_op_variant = SpikeLoraVariant(), ZeroSkipVariant(), ThreeOpVariant()
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(5, args.vocab, (args.batch, args.seq), generator=g).to(device),
        "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long, device=device),
    }
    tokens = args.batch * args.seq
    n_adapted = sum(isinstance(m, spikelora.SpikeLoraLinear) for m in spike.modules())
    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch}x{args.seq} ({tokens} tokens) "
        f"layers={args.layers} hidden={args.hidden} r={args.rank} adapted modules={n_adapted} rounds={args.rounds}"
    )

    def run(model):
        return lambda: model(**batch)

    def spike_run(variant):
        def f():
            set_variant(spike, variant)
            spike(**batch)

        return f

    methods = {
        "base": run(base),
        "merged": run(merged),
        "unmerged": run(unmerged),
        "spike-dense": spike_run(dense_variant),
        "spike-skip": spike_run(skip_variant),
        "spike-3op": spike_run(three_op_variant),
    }
    with torch.no_grad():
        torch.testing.assert_close(unmerged(**batch).logits, merged(**batch).logits, rtol=1e-4, atol=1e-4)
    rows, mems = [], {}
    for level in levels:
        vth, pooled, mean = calibrate(spike, batch, level, args.calib_iters)
        with torch.no_grad():  # the two SpikeLoRA paths compute the same function
            set_variant(spike, dense_variant)
            ref = spike(**batch).logits
            for other in (skip_variant, three_op_variant):
                set_variant(spike, other)
                torch.testing.assert_close(spike(**batch).logits, ref, rtol=1e-4, atol=1e-4)
        for f in methods.values():
            with torch.no_grad():
                f()  # warm-up
        times = {k: [] for k in methods}
        names = list(methods)
        for i in range(args.rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            for k in order:
                times[k].append(timed(methods[k], device))
        med = {k: statistics.median(v) / tokens * 1e6 for k, v in times.items()}
        # Ratios: median over rounds of the per-round ratio (the two runs of a round are close in time).
        paired = {(a, b): statistics.median(x / y for x, y in zip(times[a], times[b])) for a, b in PAIRS}
        rows.append((level, vth, pooled, mean, med, paired))
        for k in ("spike-dense", "spike-skip") if mems else methods:
            mems.setdefault(k, {})[level] = peak_bytes(methods[k], device)
        print(f"  level {level:.2f}: V_θ={vth:.4g} measured sparsity {pooled:.3f} (module mean {mean:.3f})", flush=True)

    print(
        f"\nper-token inference time (µs/token, median of {args.rounds} rounds); ratios = median of per-round "
        "ratios (base/mrg: same compute, i.e. the noise floor)"
    )
    header = (
        f"{'target':>6} {'V_θ':>8} {'sparsity':>8} {'base':>7} {'merged':>7} {'unmerged':>8} {'sp-dense':>8} "
        f"{'sp-skip':>8} " + " ".join(f"{label:>10}" for label in PAIR_LABELS)
    )
    print(header)
    crossover = []
    for level, vth, pooled, _, m, p in rows:
        print(
            f"{level:>6.2f} {vth:>8.4g} {pooled:>8.3f} {m['base']:>7.2f} {m['merged']:>7.2f} {m['unmerged']:>8.2f} "
            f"{m['spike-dense']:>8.2f} {m['spike-skip']:>8.2f} " + " ".join(f"{p[pair]:>10.3f}" for pair in PAIRS)
        )
        if p[("spike-skip", "spike-dense")] < 1.0:
            crossover.append(level)
    mib = 2**20
    print("\npeak memory per forward (MiB, activations and temporaries; weights excluded)")
    first = levels[0]
    print(
        "  "
        + "  ".join(f"{k} {mems[k][first] / mib:.1f}" for k in ("base", "merged", "unmerged"))
        + "  (independent of V_θ)"
    )
    for level in levels:
        print(
            f"  sparsity {level:.2f}: spike-dense {mems['spike-dense'][level] / mib:.1f}  "
            f"spike-skip {mems['spike-skip'][level] / mib:.1f}"
        )
    dense_vs_merged = [p[("spike-dense", "merged")] for *_, p in rows]
    print(
        f"\nSpikeLoRA (dense B) / merged LoRA per token: {min(dense_vs_merged):.3f} .. {max(dense_vs_merged):.3f}; "
        f"unmerged LoRA / merged: {statistics.median(p[('unmerged', 'merged')] for *_, p in rows):.3f}; "
        f"noise floor base/merged: {statistics.median(p[('base', 'merged')] for *_, p in rows):.3f}"
    )
    if crossover:
        print(f"zero-skip B is faster than dense B in the whole model at target sparsity {crossover}")
    else:
        print("zero-skip B is never faster than dense B in the whole model at these levels")
    op_level(args, device, levels)


if __name__ == "__main__":
    main()
