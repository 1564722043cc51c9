"""Builders shared by several test modules: tiny models and configs, hand counts, small data files.

Test modules import these as ``from builders import ...`` (``tests/helpers`` is on ``sys.path``,
see ``tests/conftest.py``); no test module imports another.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

from spikelora import SpikeLoraConfig, SpikeLoraLinear
from spikelora.experiment.backbones import deberta_v3_config

# The six encoder linears of the paper (query/key/value, attention output, FFN in and out).
DEBERTA_TARGETS = [
    "query_proj",
    "key_proj",
    "value_proj",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
]


def tiny_deberta_config(**overrides) -> DebertaV2Config:
    """A 2-layer DeBERTa-v3-shaped config: relative attention with shared keys (the q/k positional pass)."""
    return deberta_v3_config(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        position_buckets=8,
        **overrides,
    )


def tiny_deberta(seed: int = 0, **overrides) -> DebertaV2ForSequenceClassification:
    """A fresh randomly initialised (seeded) 2-layer DeBERTa-v2 classifier of :func:`tiny_deberta_config`, in eval mode."""
    torch.manual_seed(seed)
    return DebertaV2ForSequenceClassification(tiny_deberta_config(**overrides)).eval()


def spike_config(**overrides) -> SpikeLoraConfig:
    kwargs = dict(
        r=4,
        lora_alpha=2.0,
        use_rslora=True,
        target_modules=DEBERTA_TARGETS,
        task_type="SEQ_CLS",
        v_threshold=0.1,
    )
    kwargs.update(overrides)
    return SpikeLoraConfig(**kwargs)


def randomise_b(model: torch.nn.Module, seed: int = 0) -> None:
    """LoRA starts with B = 0; give B values so the adapter changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def spike_layers(model) -> dict[str, SpikeLoraLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, SpikeLoraLinear)}


def direct_counts(model, batches, tau=2.0, v_threshold=0.1):
    """Count fired units by hand from every lora_A output, split into token and other calls."""
    counts = defaultdict(lambda: [0, 0, 0, 0])  # token fired, token total, other fired, other total
    current = {}
    handles = []
    for name, layer in spike_layers(model).items():
        short = name.removeprefix("base_model.model.")

        def hook(_mod, _inp, h, short=short):
            fired = h / tau >= v_threshold
            mask = current["mask"]
            c = counts[short]
            if h.dim() == 3 and h.shape[:2] == mask.shape:
                c[0] += int((fired & mask[..., None]).sum())
                c[1] += int(mask.sum()) * h.shape[-1]
            else:
                c[2] += int(fired.sum())
                c[3] += fired.numel()

        handles.append(layer.lora_A["default"].register_forward_hook(hook))
    with torch.no_grad():
        for b in batches:
            current["mask"] = b["attention_mask"].bool()
            model(**b)
    for h in handles:
        h.remove()
    return counts


def two_batches(batch):
    second = {k: v[:2, :6].clone() for k, v in batch.items()}
    second["attention_mask"][1, 3:] = 0
    return [batch, second]


@contextmanager
def forbid_host_sync():
    """Make every tensor-to-host conversion raise while the block runs."""
    names = ["item", "tolist", "__bool__", "__int__", "__float__", "numpy", "cpu"]
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def make(n):
        def refuse(self, *a, **k):
            raise AssertionError(f"host sync: Tensor.{n} called in forward")

        return refuse

    for n in names:
        setattr(torch.Tensor, n, make(n))
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


# ---------------------------------------------------------------------------------- data files
BOM = "\ufeff"


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> None:
    path.write_text("\n".join(lines) + "\n", encoding=encoding)


def glue_files(task: str, root):
    """Two train rows and one or two dev rows per file, in the distribution's exact layout."""
    d = root / task
    d.mkdir()
    if task == "cola":
        write_lines(d / "train.tsv", ["gj04\t1\t\tThe cat sat.", "gj04\t0\t*\tCat the sat."])
        write_lines(d / "dev.tsv", ["gj04\t0\t*\tSat cat the.", "", "gj04\t1\t\tThe dog ran."])
    elif task == "sst2":
        write_lines(d / "train.tsv", ["sentence\tlabel", "a fine film \t1", "dull \t0"])
        write_lines(d / "dev.tsv", ["sentence\tlabel", 'it \'s "great" \t1'])
    elif task == "mrpc":
        head = BOM + "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
        write_lines(d / "train.tsv", [head, "1\t1\t2\tHe left.\tHe went away.", "0\t3\t4\tA b.\tC d."])
        write_lines(d / "dev.tsv", [head, "1\t5\t6\tYes.\tIndeed."])
    elif task == "stsb":
        head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
        write_lines(
            d / "train.tsv",
            [head, '0\tmain\tf\t2012\t1\tnone\tnone\tA "plane" takes off.\tAn air plane is taking off.\t5.000'],
        )
        write_lines(d / "dev.tsv", [head, "0\tmain\tf\t2012\t1\tnone\tnone\tA man.\tA woman.\t1.6"])
    elif task == "qqp":
        head = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
        write_lines(d / "train.tsv", [head, "1\t1\t2\tWhy?\tHow come?\t1", "2\t3\t4\tWho?\tWhere?\t0"])
        write_lines(d / "dev.tsv", [head, "3\t5\t6\tWhen?\tAt what time?\t1"])
    elif task == "mnli":
        head = (
            "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse"
            "\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
        )
        row = "0\t1\t1e\tfiction\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tA man sleeps.\tA person rests.\t{0}\t{0}"
        write_lines(d / "train.tsv", [head, row.format("entailment"), row.format("contradiction")])
        write_lines(d / "dev_matched.tsv", [head, row.format("neutral")])
        write_lines(d / "dev_mismatched.tsv", [head, row.format("contradiction"), row.format("entailment")])
    elif task == "qnli":
        head = "index\tquestion\tsentence\tlabel"
        write_lines(d / "train.tsv", [head, "0\tWho?\tHim.\tentailment", "1\tWhat?\tNo.\tnot_entailment"])
        write_lines(d / "dev.tsv", [head, "0\tWhere?\tHere.\tnot_entailment"])
    elif task == "rte":
        head = "index\tsentence1\tsentence2\tlabel"
        write_lines(d / "train.tsv", [head, "0\tA.\tB.\tnot_entailment", "1\tC.\tC.\tentailment"])
        write_lines(d / "dev.tsv", [head, "0\tD.\tD.\tentailment"])
    return d


def stsb_files(root: Path, n_train: int = 64, n_dev: int = 32) -> Path:
    """A generated STS-B in the distribution's layout: pairs of template sentences scored 0-5 by
    how many of their three words agree (a continuous score, so that every run's Pearson differs)."""
    words = (["cat", "dog", "man", "girl"], ["runs", "sleeps", "eats", "sings"], ["home", "outside", "today", "now"])
    pairs = list(itertools.product(*words))
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    d = root / "stsb"
    d.mkdir(parents=True, exist_ok=True)
    for name, n, offset in (("train.tsv", n_train, 0), ("dev.tsv", n_dev, 7)):
        lines = [head]
        for i in range(n):
            a, b = pairs[(5 * i + offset) % len(pairs)], pairs[(11 * i + 3 * offset + 1) % len(pairs)]
            score = 5.0 * sum(x == y for x, y in zip(a, b, strict=True)) / 3
            lines.append(
                f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\tA {a[0]} {a[1]} {a[2]}.\tA {b[0]} {b[1]} {b[2]}.\t{score:.3f}"
            )
        write_lines(d / name, lines)
    return d
