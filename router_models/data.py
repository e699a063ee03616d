"""Outcome data: prompts with the weak and the strong model's quality on each.

Accepts RouteLLM's layout (a folder of `mmlu_<subject>.csv` with one column per model, True/False)
and any CSV/JSONL of the same shape. Each row also gets a group (a `subject`/`group`/`category`/
`dataset` column, else the file's name) so cross-validation can hold out whole subjects.

A row may carry a `license` and a `use` field. `"use": "validation"` marks data whose license allows
evaluating a router but not training one that ships (AlpacaEval's judgements are CC BY-NC 4.0):
`OutcomeData.validation_only` reports it, and `turnout router train` refuses such data by default.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .jsonl import json_lines

CONTAMINATION_FILE = "contaminated_prompts.jsonl"
SUFFIXES = (".csv", ".jsonl")
GROUP_COLUMNS = ("subject", "group", "category", "dataset")
PROVENANCE_COLUMNS = ("license", "use", "source", "judge")  # never a model's quality
VALIDATION_USE = "validation"
WEAK_NAMES = ("weak", "weak_quality", "mistralai/Mixtral-8x7B-Instruct-v0.1")
STRONG_NAMES = ("strong", "strong_quality", "gpt-4-1106-preview")


@dataclass(frozen=True)
class OutcomeData:
    prompts: list[str]
    weak: np.ndarray  # quality of the weak model's answer, float (1.0/0.0 for correct/wrong)
    strong: np.ndarray
    groups: np.ndarray  # str label per row, for group-held-out evaluation
    weak_column: str = "weak"
    strong_column: str = "strong"
    validation_only: bool = False  # some rows say "use": "validation": evaluate with them, never train
    licenses: tuple[str, ...] = ()  # the distinct "license" values of the rows, if any

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, index: np.ndarray) -> OutcomeData:
        return OutcomeData(
            [self.prompts[i] for i in index], self.weak[index], self.strong[index], self.groups[index],
            self.weak_column, self.strong_column, self.validation_only, self.licenses,
        )


@dataclass(frozen=True)
class OutcomeRecords:
    """Outcome rows that come from somewhere other than a file (the gateway's Redis shadow sink):
    `source` names them in errors and in a trained head's metadata (so it must be safe to print: no
    password), `name` is the set's default name in `turnout router eval`."""

    source: str
    name: str
    rows: list[dict[str, Any]]


def load_outcomes(path: str | Path, weak_column: str | None = None, strong_column: str | None = None,
                  prompt_column: str = "prompt") -> OutcomeData:
    """Load one file or every *.csv / *.jsonl in a folder; drops RouteLLM's contaminated prompts."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.name != CONTAMINATION_FILE)
    else:
        files = [path]
    if not files:
        raise ValueError(f"no .csv or .jsonl outcome files in {path}")
    rows = _Rows(prompt_column, weak_column, strong_column,
                 skip=_contaminated_prompts(path if path.is_dir() else path.parent))
    for file in files:
        rows.add(list(_read_rows(file)), str(file), file.stem.removeprefix("mmlu_"),
                 first_line=2 if file.suffix == ".csv" else 1)
    return rows.data(f"{path}: no outcome rows (empty file)")


def outcomes_from_records(records: OutcomeRecords, weak_column: str | None = None,
                          strong_column: str | None = None, prompt_column: str = "prompt") -> OutcomeData:
    """`load_outcomes` for rows read elsewhere; an error names `records.source` and the row's number."""
    rows = _Rows(prompt_column, weak_column, strong_column, skip=set())
    rows.add(records.rows, records.source, records.name, first_line=1)
    return rows.data(f"{records.source}: no outcome rows")


class _Rows:
    """Outcome rows gathered from one or more sources that must agree on their model columns."""

    def __init__(self, prompt_column: str, weak_column: str | None, strong_column: str | None, skip: set[str]):
        self.prompt_column, self.weak_column, self.strong_column = prompt_column, weak_column, strong_column
        self.skip = skip
        self.prompts: list[str] = []
        self.weak: list[float] = []
        self.strong: list[float] = []
        self.groups: list[str] = []
        self.columns: tuple[str, str] | None = None
        self.validation_only = False
        self.licenses: set[str] = set()

    def add(self, rows: list[dict[str, Any]], source: str, default_group: str, first_line: int) -> None:
        if not rows:
            return
        columns = _pick_model_columns(rows, self.prompt_column, self.weak_column, self.strong_column, source)
        if self.columns is not None and columns != self.columns:
            raise ValueError(f"{source}: model columns {columns} differ from earlier files' {self.columns}")
        self.columns = columns
        for line, row in enumerate(rows, start=first_line):
            prompt = row.get(self.prompt_column)
            if not isinstance(prompt, str):
                raise ValueError(f"{source}:{line}: missing {self.prompt_column!r}")
            if prompt in self.skip:
                continue
            missing = [c for c in columns if row.get(c) in (None, "")]
            if missing:
                raise ValueError(f"{source}:{line}: missing {' and '.join(map(repr, missing))}")
            self.prompts.append(prompt)
            self.weak.append(_quality(row[columns[0]], source, line))
            self.strong.append(_quality(row[columns[1]], source, line))
            self.groups.append(_group(row, default_group))
            self.validation_only |= row.get("use") == VALIDATION_USE
            if row.get("license"):
                self.licenses.add(str(row["license"]))

    def data(self, if_empty: str) -> OutcomeData:
        if self.columns is None:
            raise ValueError(if_empty)
        return OutcomeData(self.prompts, np.array(self.weak), np.array(self.strong), np.array(self.groups),
                           *self.columns, validation_only=self.validation_only,
                           licenses=tuple(sorted(self.licenses)))


def shown_url(url: str) -> str:
    """`url` with its password, if any, replaced by ***: safe for error messages and metadata."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _group(row: dict[str, Any], default: str) -> str:
    return str(next((row[c] for c in GROUP_COLUMNS if row.get(c) not in (None, "")), default))


def _read_rows(file: Path) -> Iterable[dict[str, Any]]:
    """Rows of one file; an unreadable file (permissions, not UTF-8) is a ValueError naming it."""
    try:
        yield from _parse_rows(file)
    except UnicodeDecodeError:
        raise ValueError(f"{file}: cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"{file}: cannot read: {exc.strerror or exc}") from None


def _parse_rows(file: Path) -> Iterable[dict[str, Any]]:
    if file.suffix == ".jsonl":
        for line_no, row in json_lines(file):
            if not isinstance(row, dict):
                raise ValueError(f"{file}:{line_no}: expected a JSON object")
            yield row
    else:
        with file.open(encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f)


def _pick_model_columns(rows: list[dict[str, Any]], prompt_column: str, weak: str | None, strong: str | None,
                        file: str) -> tuple[str, str]:
    """Explicit names win; then known names; then the only two other columns, weaker-on-average first."""
    header = [c for c in rows[0] if c != prompt_column and c not in GROUP_COLUMNS + PROVENANCE_COLUMNS]
    weak = weak or next((c for c in WEAK_NAMES if c in header), None)
    strong = strong or next((c for c in STRONG_NAMES if c in header), None)
    if weak and strong:
        missing = [c for c in (weak, strong) if c not in header]
        if missing:
            raise ValueError(f"{file}: no column(s) {missing}; columns are {header}")
        return weak, strong
    if (weak is None) != (strong is None):
        side, names = ("weak", WEAK_NAMES) if weak is None else ("strong", STRONG_NAMES)
        raise ValueError(f"{file}: no {side} model quality column (one of {', '.join(names)}); columns are {header}")
    if len(header) != 2:
        raise ValueError(f"{file}: cannot tell weak and strong apart among {header}; name them explicitly")
    means = [np.mean([_quality(r.get(c), file, 0) for r in rows]) for c in header]
    return (header[0], header[1]) if means[0] <= means[1] else (header[1], header[0])


def _quality(value: object, file: str, line: int) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return 1.0 if text == "true" else 0.0
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{file}:{line}: quality {value!r} is neither a number nor True/False") from None


def _contaminated_prompts(folder: Path) -> set[str]:
    file = folder / CONTAMINATION_FILE
    if not file.exists():
        return set()
    with file.open(encoding="utf-8") as f:
        return {json.loads(line)["eval_prompt"] for line in f if line.strip()}
