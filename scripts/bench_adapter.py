"""Training-step time and peak memory: PEFT LoRA vs SpikeLoRA on a DeBERTaV3-base-shaped model.

Both adapters use r = 8, rsLoRA with α = √8, on all 72 encoder linears (query/key/value proj,
attention output, FFN in and out, 12 layers), with the classifier head trained as in the paper.
The model is randomly initialised from a DeBERTaV3-base config (no download). Steps of the two
methods alternate (ABBA order) in one process so that machine noise hits both alike; medians and
ratios are printed.

Peak memory is measured on CPU with a dispatch-mode tracker that follows every tensor storage
created during one training step (forward, backward, clipping, AdamW step) until it is freed;
"static" is what lives before the step (weights, buffers, optimiser state). On CUDA the
allocator's own peak is reported as well.

    python scripts/bench_adapter.py                  # the issue's setting: 8 x 64 tokens, 12 layers
    python scripts/bench_adapter.py --rounds 3 --layers 2   # a quick look
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import weakref

import torch
from peft import LoraConfig, get_peft_model
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import DebertaV2ForSequenceClassification

from spikelora import SpikeLoraConfig
from spikelora.experiment.backbones import deberta_v3_config

TARGETS = ["query_proj", "key_proj", "value_proj", "attention.output.dense", "intermediate.dense", "output.dense"]


class PeakMemory(TorchDispatchMode):
    """Tracks bytes of tensor storages created inside the block, freed when their storage dies."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


class Method:
    def __init__(self, name: str, peft_config, args, device: torch.device) -> None:
        self.name = name
        torch.manual_seed(0)
        base = DebertaV2ForSequenceClassification(deberta_v3_config(num_hidden_layers=args.layers))
        self.model = get_peft_model(base, peft_config).to(device).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.01)
        n_adapted = sum(1 for n, _ in self.model.named_modules() if n.endswith(".lora_A"))
        self.n_adapted = n_adapted
        self.times: list[float] = []

    def step(self, batch) -> None:
        loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def timed_step(self, batch, device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - t0)

    def static_bytes(self) -> int:
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        for state in self.opt.state.values():
            tensors += [v for v in state.values() if torch.is_tensor(v)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def peak_step_bytes(self, batch) -> int:
        with PeakMemory() as tracker:
            self.step(batch)
        return tracker.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10, help="timed steps per method (alternated)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    common = dict(
        r=args.rank,
        lora_alpha=math.sqrt(args.rank),
        use_rslora=True,
        lora_dropout=0.0,
        target_modules=TARGETS,
        task_type="SEQ_CLS",
    )
    methods = [
        Method("LoRA", LoraConfig(**common), args, device),
        Method("SpikeLoRA", SpikeLoraConfig(**common, v_threshold=0.1), args, device),
    ]
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(5, 128100, (args.batch, args.seq), generator=g).to(device),
        "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (args.batch,), generator=g).to(device),
    }
    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch}x{args.seq} layers={args.layers} "
        f"r={args.rank} adapted modules={methods[0].n_adapted}/{methods[1].n_adapted}"
    )

    for m in methods:
        for _ in range(args.warmup):
            m.step(batch)
    for i in range(args.rounds):
        order = methods if i % 2 == 0 else methods[::-1]  # ABBA
        for m in order:
            m.timed_step(batch, device)

    peaks = {}
    for m in methods:
        static = m.static_bytes()
        dynamic = m.peak_step_bytes(batch)
        cuda_peak = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            m.step(batch)
            cuda_peak = torch.cuda.max_memory_allocated(device)
        peaks[m.name] = (static, dynamic, cuda_peak)

    mib = 2**20
    print(
        f"\n{'method':<10} {'median step s':>14} {'min s':>8} {'static MiB':>11} {'step peak MiB':>14} {'total MiB':>10}"
    )
    for m in methods:
        static, dynamic, cuda_peak = peaks[m.name]
        line = (
            f"{m.name:<10} {statistics.median(m.times):>14.4f} {min(m.times):>8.4f} "
            f"{static / mib:>11.1f} {dynamic / mib:>14.1f} {(static + dynamic) / mib:>10.1f}"
        )
        if cuda_peak is not None:
            line += f"  cuda max allocated {cuda_peak / mib:.1f} MiB"
        print(line)
    lora, spike = methods
    t_ratio = statistics.median(spike.times) / statistics.median(lora.times)
    (ls, ld, lc), (ss, sd, sc) = peaks["LoRA"], peaks["SpikeLoRA"]
    paired = statistics.median(s / lo for s, lo in zip(spike.times, lora.times))
    print(f"\nSpikeLoRA / LoRA step time (median): {t_ratio:.3f}   (target <= 1.03)")
    print(f"SpikeLoRA / LoRA step time (median of per-round ratios): {paired:.3f}")
    print(f"SpikeLoRA / LoRA peak memory (static + step peak): {(ss + sd) / (ls + ld):.4f}   (target <= 1.02)")
    print(f"SpikeLoRA / LoRA step peak alone (activations, grads, temporaries): {sd / ld:.4f}")
    if lc is not None:
        print(f"SpikeLoRA / LoRA CUDA max allocated: {sc / lc:.4f}")


if __name__ == "__main__":
    main()
