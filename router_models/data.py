"""Outcome data: prompts with the weak and the strong model's quality on each.

Accepts RouteLLM's layout (a folder of `mmlu_<subject>.csv` with one column per model, True/False)
and any CSV/JSONL of the same shape. Each row also gets a group (a `subject`/`group`/`category`
column, else the file's name) so cross-validation can hold out whole subjects.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONTAMINATION_FILE = "contaminated_prompts.jsonl"
SUFFIXES = (".csv", ".jsonl")
GROUP_COLUMNS = ("subject", "group", "category")
WEAK_NAMES = ("weak", "mistralai/Mixtral-8x7B-Instruct-v0.1")
STRONG_NAMES = ("strong", "gpt-4-1106-preview")


@dataclass(frozen=True)
class OutcomeData:
    prompts: list[str]
    weak: np.ndarray  # quality of the weak model's answer, float (1.0/0.0 for correct/wrong)
    strong: np.ndarray
    groups: np.ndarray  # str label per row, for group-held-out evaluation
    weak_column: str = "weak"
    strong_column: str = "strong"

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, index: np.ndarray) -> OutcomeData:
        return OutcomeData(
            [self.prompts[i] for i in index], self.weak[index], self.strong[index], self.groups[index],
            self.weak_column, self.strong_column,
        )


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
    contaminated = _contaminated_prompts(path if path.is_dir() else path.parent)
    prompts: list[str] = []
    weak: list[float] = []
    strong: list[float] = []
    groups: list[str] = []
    columns: tuple[str, str] | None = None
    for file in files:
        rows = list(_read_rows(file))
        if not rows:
            continue
        file_columns = _pick_model_columns(rows, prompt_column, weak_column, strong_column, file)
        if columns is not None and file_columns != columns:
            raise ValueError(f"{file}: model columns {file_columns} differ from earlier files' {columns}")
        columns = file_columns
        default_group = file.stem.removeprefix("mmlu_")
        for line, row in enumerate(rows, start=2 if file.suffix == ".csv" else 1):
            prompt = row.get(prompt_column)
            if not isinstance(prompt, str):
                raise ValueError(f"{file}:{line}: missing {prompt_column!r}")
            if prompt in contaminated:
                continue
            prompts.append(prompt)
            weak.append(_quality(row[columns[0]], file, line))
            strong.append(_quality(row[columns[1]], file, line))
            groups.append(_group(row, default_group))
    if columns is None:
        raise ValueError(f"{path}: no rows")
    return OutcomeData(prompts, np.array(weak), np.array(strong), np.array(groups), *columns)


def _group(row: dict, default: str) -> str:
    return str(next((row[c] for c in GROUP_COLUMNS if row.get(c) not in (None, "")), default))


def _read_rows(file: Path) -> Iterable[dict]:
    if file.suffix == ".jsonl":
        with file.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{file}:{line_no}: not JSON ({exc.msg})") from None
    else:
        with file.open(encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f)


def _pick_model_columns(rows: list[dict], prompt_column: str, weak: str | None, strong: str | None,
                        file: Path) -> tuple[str, str]:
    """Explicit names win; then known names; then the only two other columns, weaker-on-average first."""
    header = [c for c in rows[0] if c != prompt_column and c not in GROUP_COLUMNS]
    weak = weak or next((c for c in WEAK_NAMES if c in header), None)
    strong = strong or next((c for c in STRONG_NAMES if c in header), None)
    if weak and strong:
        missing = [c for c in (weak, strong) if c not in header]
        if missing:
            raise ValueError(f"{file}: no column(s) {missing}; columns are {header}")
        return weak, strong
    if len(header) != 2:
        raise ValueError(f"{file}: cannot tell weak and strong apart among {header}; name them explicitly")
    means = [np.mean([_quality(r[c], file, 0) for r in rows]) for c in header]
    return (header[0], header[1]) if means[0] <= means[1] else (header[1], header[0])


def _quality(value: object, file: Path, line: int) -> float:
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
