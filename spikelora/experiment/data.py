"""Task data from the hub or from the original distribution files on disk.

Offline, ``load_task_data(task, data_dir=PATH)`` reads GLUE's own file layouts (the files of the
GLUE distribution, unchanged) and the raw Pang & Lee Subj files. Every row is checked: a line
with the wrong number of columns, an empty text or a label outside the task's set raises
:class:`DataError` naming the file and line. Blank lines are skipped, counted and reported.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, concatenate_datasets, load_dataset, load_from_disk
from sklearn.model_selection import train_test_split

from .tasks import TaskSpec, get_task

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file that cannot be read as the task's layout."""


@dataclass(frozen=True)
class Layout:
    """How one task's TSV files are laid out.

    ``columns`` maps our field names to a header name (str) or a column index (int, negative
    counts from the end); the label is the field ``"label"``.
    """

    files: dict[str, str]
    columns: dict[str, str | int]
    header: bool = True
    n_columns: int | None = None  # fixed count for files without a usable header
    label_map: dict[str, int] | None = None  # string labels; None = integer ids (or float scores)
    encoding: str = "utf-8"


_NLI = {"entailment": 0, "not_entailment": 1}

LAYOUTS: dict[str, Layout] = {
    # CoLA: no header; source, label, original mark, sentence.
    "cola": Layout(
        {"train": "train.tsv", "validation": "dev.tsv"},
        {"sentence": 3, "label": 1},
        header=False,
        n_columns=4,
    ),
    "sst2": Layout({"train": "train.tsv", "validation": "dev.tsv"}, {"sentence": "sentence", "label": "label"}),
    # MRPC: "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", with a UTF-8 byte-order mark.
    "mrpc": Layout(
        {"train": "train.tsv", "validation": "dev.tsv"},
        {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
        encoding="utf-8-sig",
    ),
    # STS-B: ten columns, score last; stray quotes are text (quoting off).
    "stsb": Layout(
        {"train": "train.tsv", "validation": "dev.tsv"},
        {"sentence1": 7, "sentence2": 8, "label": -1},
        n_columns=10,
    ),
    "qqp": Layout(
        {"train": "train.tsv", "validation": "dev.tsv"},
        {"question1": "question1", "question2": "question2", "label": "is_duplicate"},
    ),
    "mnli": Layout(
        {
            "train": "train.tsv",
            "validation_matched": "dev_matched.tsv",
            "validation_mismatched": "dev_mismatched.tsv",
        },
        {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"},
        label_map={"entailment": 0, "neutral": 1, "contradiction": 2},
    ),
    "qnli": Layout(
        {"train": "train.tsv", "validation": "dev.tsv"},
        {"question": "question", "sentence": "sentence", "label": "label"},
        label_map=_NLI,
    ),
    "rte": Layout(
        {"train": "train.tsv", "validation": "dev.tsv"},
        {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"},
        label_map=_NLI,
    ),
}

SUBJ_FILES = {"subjective": "quote.tok.gt9.5000", "objective": "plot.tok.gt9.5000"}


@dataclass
class ReadReport:
    """What reading one file found besides the rows."""

    path: Path
    rows: int = 0
    blank_lines: list[int] = field(default_factory=list)


def read_tsv(path: Path, task: TaskSpec, layout: Layout) -> tuple[dict[str, list], ReadReport]:
    """Read one TSV of ``layout`` into columns; raise :class:`DataError` on any malformed row."""
    check_regular_file(path, task, list(layout.files.values()))
    try:
        return _read_tsv(path, task, layout)
    except csv.Error as err:
        raise DataError(f"{path}: {err}. Is this the original file for task {task.name!r}?") from None
    except UnicodeDecodeError as err:
        raw = path.read_bytes()
        start = raw.find(err.object[err.start : err.end]) if isinstance(err.object, bytes) else -1
        line = raw[: max(start, 0)].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not {layout.encoding} text ({err.reason}). Is this the original file for task "
            f"{task.name!r}? Re-encode it as UTF-8."
        ) from None


def _read_tsv(path: Path, task: TaskSpec, layout: Layout) -> tuple[dict[str, list], ReadReport]:
    report = ReadReport(path)
    out: dict[str, list] = {name: [] for name in layout.columns}
    with path.open(encoding=layout.encoding, newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        index: dict[str, int] = {}
        width = layout.n_columns
        for line_no, row in _numbered(reader, path):
            if not row or (len(row) == 1 and not row[0].strip()):
                report.blank_lines.append(line_no)
                continue
            if layout.header and not index:
                index = _header_index(row, path, layout)
                width = width or len(row)
                continue
            if len(row) != width:
                raise DataError(
                    f"{path}:{line_no}: expected {width} tab-separated columns, found {len(row)}. "
                    "Is this the original GLUE file for the task?"
                )
            for name, col in layout.columns.items():
                value = row[index[col] if isinstance(col, str) else col]
                if name == "label":
                    out[name].append(_label(value, task, layout, path, line_no))
                else:
                    if not value.strip():
                        raise DataError(f"{path}:{line_no}: empty {name!r}.")
                    out[name].append(value)
            report.rows += 1
    if layout.header and not index:
        raise DataError(f"{path} is empty: expected a header line and rows.")
    if report.rows == 0:
        raise DataError(f"{path} holds no rows: expected the task's original file.")
    if report.blank_lines:
        log.warning("%s: skipped %d blank line(s): %s", path, len(report.blank_lines), report.blank_lines[:10])
    return out, report


def _numbered(reader: Any, path: Path) -> Iterator[tuple[int, list[str]]]:
    """``enumerate(reader, 1)`` whose csv errors (a field over the size limit) name the file and line."""
    line_no = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(
                f"{path}:{reader.line_num}: {err} (a line of {path.stat().st_size} bytes at most)."
            ) from None
        line_no += 1
        yield line_no, row


def check_regular_file(path: Path, task: TaskSpec, names: list[str]) -> None:
    """Raise :class:`DataError` unless ``path`` is a regular file (not missing, a FIFO or a device)."""
    if path.is_file():
        return
    if path.exists() or path.is_symlink():
        kind = "a directory" if path.is_dir() else "not a regular file (a FIFO, a device or a broken link?)"
        raise DataError(
            f"Data file {path} is {kind}: task {task.name!r} reads its original files ({', '.join(names)})."
        )
    raise DataError(
        f"Missing data file {path} for task {task.name!r}. task.data_dir must hold the task's "
        f"original files: {', '.join(names)}."
    )


def _header_index(row: list[str], path: Path, layout: Layout) -> dict[str, int]:
    index = {name.strip(): i for i, name in enumerate(row)}
    wanted = [c for c in layout.columns.values() if isinstance(c, str)]
    missing = [c for c in wanted if c not in index]
    if missing:
        raise DataError(
            f"{path}:1: header lacks column(s) {missing}; found {row}. Is this the original GLUE file for the task?"
        )
    return index


def _label(value: str, task: TaskSpec, layout: Layout, path: Path, line_no: int) -> int | float:
    value = value.strip()
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            raise DataError(f"{path}:{line_no}: score {value!r} is not a number.") from None
        if not math.isfinite(score):
            raise DataError(f"{path}:{line_no}: score {value!r} is not a finite number.")
        low, high = task.score_range or (-math.inf, math.inf)
        if not low <= score <= high:
            raise DataError(f"{path}:{line_no}: score {value!r} is outside {low:g}..{high:g} for task {task.name!r}.")
        return score
    if layout.label_map is not None:
        if value not in layout.label_map:
            raise DataError(
                f"{path}:{line_no}: label {value!r} is not one of {sorted(layout.label_map)} for task {task.name!r}."
            )
        return layout.label_map[value]
    try:
        label = int(value)
    except ValueError:
        label = -1
    if not 0 <= label < task.num_labels:
        raise DataError(
            f"{path}:{line_no}: label {value!r} is outside 0..{task.num_labels - 1} for task {task.name!r}."
        )
    return label


def read_subj(data_dir: Path, split_seed: int = 0, validation_fraction: float = 0.1) -> DatasetDict:
    """The raw Pang & Lee files, split stratified into train/validation by ``split_seed``.

    Labels: objective (``plot.tok.gt9.5000``) = 0, subjective (``quote.tok.gt9.5000``) = 1.
    With a fixed ``split_seed`` every seed of a run is evaluated on the same sentences; the authors'
    protocol (``task.split_seed: seed``) draws a new split per training seed instead.
    """

    texts: list[str] = []
    labels: list[int] = []
    for label_name, file_name in SUBJ_FILES.items():
        path = data_dir / file_name
        if not path.is_file():
            raise DataError(
                f"Missing data file {path} for task 'subj': task.data_dir must hold "
                f"{' and '.join(SUBJ_FILES.values())} from Pang & Lee's subjectivity dataset v1.0."
            )
        label = get_task("subj").label_names.index(label_name)
        lines = [ln.strip() for ln in read_text_lines(path)]
        kept = [ln for ln in lines if ln]
        if len(kept) < len(lines):
            log.warning("%s: skipped %d blank line(s)", path, len(lines) - len(kept))
        if not kept:
            raise DataError(f"{path} holds no sentences.")
        texts += kept
        labels += [label] * len(kept)
    train_x, val_x, train_y, val_y = train_test_split(
        texts, labels, test_size=validation_fraction, random_state=split_seed, stratify=labels
    )
    return DatasetDict(
        train=Dataset.from_dict({"text": train_x, "label": train_y}),
        validation=Dataset.from_dict({"text": val_x, "label": val_y}),
    )


def load_task_data(task: str | TaskSpec, data_dir: str | Path | None = None, split_seed: int = 0) -> DatasetDict:
    """Train and evaluation splits of ``task`` with columns ``task.text_fields`` + ``label``.

    ``data_dir=None`` loads from the Hugging Face hub (``nyu-mll/glue``; Subj from
    ``SetFit/subj``); a path reads the original files there.
    """
    spec = get_task(task) if isinstance(task, str) else task
    if data_dir is None:
        return _from_hub(spec, split_seed)
    data_dir = Path(data_dir).expanduser()
    check_data_dir(spec, data_dir)
    if spec.name == "subj":
        return read_subj(data_dir, split_seed)
    layout = LAYOUTS[spec.name]
    splits = {}
    for split, file_name in layout.files.items():
        columns, _ = read_tsv(data_dir / file_name, spec, layout)
        splits[split] = Dataset.from_dict(columns)
    return DatasetDict(splits)


def task_files(spec: TaskSpec) -> list[str]:
    """The names of ``spec``'s original distribution files."""
    return list(SUBJ_FILES.values()) if spec.name == "subj" else list(LAYOUTS[spec.name].files.values())


def check_data_dir(spec: TaskSpec, data_dir: Path) -> None:
    """Raise :class:`DataError` unless ``data_dir`` holds every original file of ``spec``."""
    names = task_files(spec)
    if not data_dir.exists():
        raise DataError(
            f"task.data_dir={data_dir}: no such directory. Point it at a folder holding {spec.name}'s original "
            f"files ({', '.join(names)}), or leave it null to load from the hub."
        )
    if not data_dir.is_dir():
        raise DataError(f"task.data_dir {data_dir} is not a directory.")
    for name in names:
        if (data_dir / name).exists() and not (data_dir / name).is_file():
            check_regular_file(data_dir / name, spec, names)
    missing = [name for name in names if not (data_dir / name).is_file()]
    if missing:
        raise DataError(
            f"Missing data file(s) {', '.join(missing)} in {data_dir} for task {spec.name!r}: task.data_dir must "
            f"hold the task's original files ({', '.join(names)})."
        )


def read_text_lines(path: Path) -> list[str]:
    """The lines of a text file split on ``\\n`` only, read as UTF-8, else as cp1252.

    ``str.splitlines`` also breaks at U+0085 and other separators that occur inside sentences
    of the raw files (cp1252's ellipsis byte 0x85 decoded as Latin-1 is U+0085).
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise DataError(f"{path}:{line}: byte {raw[err.start]:#04x} is neither UTF-8 nor cp1252 text.") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.removesuffix("\r") for ln in lines]


def _from_hub(spec: TaskSpec, split_seed: int) -> DatasetDict:

    repo, config = spec.hub
    try:
        raw = load_dataset(repo, config or spec.name)
    except (ConnectionError, OSError) as err:
        raise DataError(
            f"Could not reach the hub for task {spec.name!r} ({repo}): {err}. Offline, pass task.data_dir=DIR "
            "holding the task's original files (see docs/runner.md, 'Task data')."
        ) from None
    if spec.name == "subj":
        full = concatenate_datasets([raw[s] for s in raw]).select_columns(["text", "label"])
        parts = full.train_test_split(test_size=0.1, seed=split_seed, stratify_by_column=None)
        return DatasetDict(train=parts["train"], validation=parts["test"])
    keep = [*spec.text_fields, "label"]
    return DatasetDict({s: raw[s].select_columns(keep) for s in ("train", *spec.eval_splits)})


# ---------------------------------------------------------------------------------- tokenising
TOKENIZE_VERSION = 2  # bump when tokenisation or the cache key changes, to invalidate old caches


def tokenize_task(
    data: DatasetDict,
    tokenizer,
    spec: TaskSpec,
    max_length: int,
    cache_dir: str | Path | None,
    source: dict,
) -> tuple[DatasetDict, bool]:
    """Tokenise every split (truncation to ``max_length``, no padding: the collator pads per batch).

    With ``cache_dir`` the result is saved there, keyed by the data's content (the sha256 of its files, as read), the tokenizer's full
    definition and ``max_length``; a second run loads it instead of tokenising again. Returns the
    data and whether it came from the cache.
    """

    def encode(batch):
        texts = [batch[f] for f in spec.text_fields]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    path = None
    if cache_dir is not None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        tok_id = backend.to_str() if backend is not None else repr(tokenizer)
        key = json.dumps(
            {
                "task": spec.name,
                "source": source,
                "tokenizer": hashlib.sha256(tok_id.encode()).hexdigest(),
                "max_length": max_length,
                "version": TOKENIZE_VERSION,
            },
            sort_keys=True,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        path = Path(cache_dir).expanduser() / "tokenized" / f"{spec.name}-{digest}"
        if (path / "dataset_dict.json").exists():
            return load_from_disk(str(path)), True

    columns = data["train"].column_names
    tokenized = data.map(encode, batched=True, remove_columns=[c for c in columns if c != "label"], desc="Tokenising")
    if path is not None:
        # Several processes (a sweep, DDP ranks) may tokenise the same data at once: each writes its
        # own temporary copy and the first rename wins; the others drop theirs.
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenized.save_to_disk(str(tmp))
        try:
            tmp.rename(path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        tokenized = load_from_disk(str(path))
    return tokenized, False
