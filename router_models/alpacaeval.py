"""AlpacaEval pairwise judgements as router outcome data, marked as validation-only.

AlpacaEval (tatsu-lab/alpaca_eval) has 805 open-ended instructions; for Mixtral-8x7B-Instruct (the
weak model of RouteLLM's MMLU data) against GPT-4-1106-preview (the strong one) a GPT-4-Turbo judge
said which answer is better, with two judge prompts (the second reasons first). It is the open-ended
chat counterpart of the MMLU outcomes, so it tells whether a router transfers beyond exam questions.

**Its data license is CC BY-NC 4.0.** It may be used to *evaluate* routers, never to train, tune or
select a head that ships with the project. Every converted row therefore carries
`"license": "CC-BY-NC-4.0", "use": "validation"`, and `turnout router train` refuses rows so marked
unless told `--allow-validation-data` (local experiments only). The data is read from where the
user keeps it and is never copied into the repository.

Input: a folder with one JSONL per judge, each line `{"prompt", "dataset", "weak_quality",
"strong_quality"}` (weak_quality = 1 where the judge preferred Mixtral, fractions for ties).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .jsonl import json_lines

LICENSE = "CC-BY-NC-4.0"
JUDGE_FILES = {1: "mixtral_vs_gpt4_1106_gpt4_turbo_fn.jsonl", 2: "mixtral_vs_gpt4_1106_cot_gpt4_turbo_fn.jsonl"}
JUDGE_NAMES = {1: "alpaca_eval_gpt4_turbo_fn", 2: "alpaca_eval_cot_gpt4_turbo_fn"}
_FIELDS = ("prompt", "weak_quality", "strong_quality")


def judge_file(folder: str | Path, judge: int) -> Path:
    if judge not in JUDGE_FILES:
        raise ValueError(f"judge must be one of {sorted(JUDGE_FILES)}, not {judge}")
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder (expected the AlpacaEval outcome files)")
    file = folder / JUDGE_FILES[judge]
    if not file.is_file():
        raise ValueError(f"{folder}: no {JUDGE_FILES[judge]} (judge {judge})")
    return file


def outcome_rows(folder: str | Path, judge: int) -> Iterator[dict[str, Any]]:
    """The judge's rows in the router outcome shape, each marked validation-only; ValueError on a bad line."""
    file = judge_file(folder, judge)
    try:
        parsed = list(json_lines(file))  # every line read before any row is used
    except UnicodeDecodeError:
        raise ValueError(f"{file}: cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"{file}: cannot read: {exc.strerror or exc}") from None
    count = 0
    for line_no, row in parsed:
        missing = [f for f in _FIELDS if not isinstance(row, dict) or row.get(f) is None]
        if missing:
            raise ValueError(f"{file}:{line_no}: missing {' and '.join(map(repr, missing))}")
        if not isinstance(row["prompt"], str):
            raise ValueError(f"{file}:{line_no}: 'prompt' is not a string")
        count += 1
        yield {"prompt": row["prompt"], "dataset": str(row.get("dataset") or "alpacaeval"),
               "weak_quality": float(row["weak_quality"]), "strong_quality": float(row["strong_quality"]),
               "judge": JUDGE_NAMES[judge], "license": LICENSE, "use": "validation"}
    if count == 0:
        raise ValueError(f"{file}: no rows (the file is empty)")


def convert(folder: str | Path, judge: int, out: str | Path) -> int:
    """Write the judge's outcome rows to `out` (JSONL); returns the number of rows."""
    rows = list(outcome_rows(folder, judge))  # validate everything before writing anything
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)
