"""SpikeGPT forward + backward on CPU: our parallel model vs a straightforward per-token loop.

The 12-layer / 512-wide config (the upstream NLU scripts' size) with a 2-class head, batch
32 x 64 tokens, random init. "ours" is ``SpikeGPT.forward`` (linears over the whole sequence, one
loop over tokens inside the WKV scan and each LIF); the reference is the token-by-token loop of
``tests/helpers/spikegpt_reference.py`` (every layer stepped once per token, as an RNN; the tests
check the model against it). Runs alternate; medians, the ratio and tokens per second are printed.

    python scripts/bench_spikegpt.py
    python scripts/bench_spikegpt.py --layers 2 --embd 128 --rounds 2   # a quick look

The reference is loaded from its file (``--reference``, by default the checkout's copy); the
script never puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path
from types import ModuleType

import torch

from spikelora.models.spikegpt import SpikeGPT, SpikeGPTConfig

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "helpers" / "spikegpt_reference.py"


def load_reference(path: Path) -> ModuleType:
    """The per-token reference implementation, imported from its file (nothing added to ``sys.path``)."""
    if not path.is_file():
        raise SystemExit(f"no reference implementation at {path} (pass --reference PATH)")
    spec = importlib.util.spec_from_file_location("spikegpt_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--embd", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="spikegpt_reference.py to compare with")
    args = parser.parse_args()
    recurrent_forward = load_reference(args.reference).recurrent_forward

    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(args.layers, args.embd, 50277, n_classes=2, dropout=0.0)).train()
    ids = torch.randint(0, 50277, (args.batch, args.tokens))
    labels = torch.randint(0, 2, (args.batch,))

    def ours() -> None:
        model(ids, labels=labels).loss.backward()

    def reference() -> None:
        hidden, _ = recurrent_forward(model, ids, grad=True)
        torch.nn.functional.cross_entropy(model.head(hidden[:, -1]), labels).backward()

    times: dict[str, list[float]] = {"ours": [], "reference": []}
    fns = {"ours": ours, "reference": reference}
    for name in fns:  # warm-up
        fns[name]()
        model.zero_grad(set_to_none=True)
    for i in range(args.rounds):
        for name in ["ours", "reference"] if i % 2 == 0 else ["reference", "ours"]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)

    tokens = args.batch * args.tokens
    print(
        f"SpikeGPT {args.layers}x{args.embd}, batch {args.batch}x{args.tokens}, forward+backward, "
        f"threads={torch.get_num_threads()}, {args.rounds} alternated rounds"
    )
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<10} median {med:8.3f} s   {tokens / med:9.0f} tokens/s")
    ratio = statistics.median(times["reference"]) / statistics.median(times["ours"])
    print(f"speed-up ours vs per-token reference: {ratio:.2f}x   (aim >= 5x)")


if __name__ == "__main__":
    main()
