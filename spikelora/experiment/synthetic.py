"""Small generated tasks written in the original files' layout, for offline smoke runs and tests.

The files go through the same loader as real data (:mod:`spikelora.experiment.data`), so a smoke run checks
the whole path. The rules are learnable by a small model:

* ``cola``: template sentences in the past tense; unacceptable ones over-regularise the verb
  ("The dog runned today.").
* ``subj``: "subjective" sentences carry opinion words, "objective" ones plot words
  (``quote.tok.gt9.5000`` / ``plot.tok.gt9.5000``, the latter written in Latin-1 like the original).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

NOUNS = ["dog", "cat", "child", "teacher", "bird", "farmer", "singer", "doctor", "horse", "pilot"]
# (correct past tense, over-regularised error): a child's morphology error, CoLA's "*" kind.
PAST = [
    ("ran", "runned"),
    ("slept", "sleeped"),
    ("sang", "singed"),
    ("swam", "swimmed"),
    ("went", "goed"),
    ("ate", "eated"),
    ("fell", "falled"),
    ("drew", "drawed"),
    ("flew", "flied"),
    ("wrote", "writed"),
]
ADVERBS = ["quickly", "today", "again", "outside", "often", "slowly", "now", "there"]
OPINION = ["wonderful", "boring", "i think", "beautifully", "awful", "charming", "i love", "dull"]
PLOT = ["travels to", "meets", "discovers", "returns to", "escapes from", "café in", "finds", "leaves"]
PLACES = ["paris", "the village", "a castle", "the city", "an island", "the desert", "rome", "the ship"]

SUPPORTED = ("cola", "subj")
# Bump when a generator's output changes: it stands for the files' content in the run identity.
SYNTHETIC_VERSION = 1


def _cola_sentence(rng: random.Random) -> tuple[str, int]:
    noun, (good, bad), adverb = rng.choice(NOUNS), rng.choice(PAST), rng.choice(ADVERBS)
    subject = noun + "s" if rng.random() < 0.5 else noun
    acceptable = rng.random() < 0.6
    return f"The {subject} {good if acceptable else bad} {adverb}.", int(acceptable)


def write_synthetic_cola(directory: Path, n_train: int = 480, n_dev: int = 120, seed: int = 0) -> None:
    """CoLA's layout: ``train.tsv``/``dev.tsv``, no header, (source, label, mark, sentence)."""
    rng = random.Random(seed)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = []
        for _ in range(n):
            sentence, label = _cola_sentence(rng)
            rows.append(f"syn01\t{label}\t{'' if label else '*'}\t{sentence}")
        _write_atomic(directory / name, "\n".join(rows) + "\n", "utf-8")


def write_synthetic_subj(directory: Path, n_per_class: int = 300, seed: int = 0) -> None:
    """Pang & Lee's layout: one tokenised sentence per line in each of the two files."""
    rng = random.Random(seed)
    quote = [f"{rng.choice(OPINION)} the {rng.choice(NOUNS)} is {rng.choice(OPINION)} ." for _ in range(n_per_class)]
    plot = [f"the {rng.choice(NOUNS)} {rng.choice(PLOT)} {rng.choice(PLACES)} ." for _ in range(n_per_class)]
    _write_atomic(directory / "quote.tok.gt9.5000", "\n".join(quote) + "\n", "latin-1")
    _write_atomic(directory / "plot.tok.gt9.5000", "\n".join(plot) + "\n", "latin-1")


def write_synthetic(task: str, directory: str | Path, seed: int = 0) -> Path:
    """Write the generated ``task`` into ``directory`` (created); a file that differs from the
    generator's output (edited by hand) is rewritten, so the data read is always the generator's."""
    directory = Path(directory).expanduser()
    if task not in SUPPORTED:
        raise ValueError(
            f"task.synthetic=true is available for {', '.join(SUPPORTED)}, not {task!r}; "
            "point task.data_dir at the real files instead."
        )
    directory.mkdir(parents=True, exist_ok=True)
    if task == "cola":
        write_synthetic_cola(directory, seed=seed)
    else:
        write_synthetic_subj(directory, seed=seed)
    return directory


def _write_atomic(path: Path, text: str, encoding: str) -> None:
    data = text.encode(encoding)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return  # already the generator's output: untouched (its mtime too)
    # Parallel jobs of a sweep may generate the same files at once: unique temporaries, atomic renames.
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding=encoding)
    tmp.replace(path)
