"""Cheap surface features of a prompt that mean "hard" across kinds of prompts, not just MMLU.

Length, numbers and math notation, code, and the number of questions asked are visible in a math
word problem or a chat turn just as in an exam question; the head combines them with the embedding.
Each feature is a compressed count (log1p) so a few extreme prompts cannot dominate a linear head.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_MATH = re.compile(r"[=+*/^<>√∫∑∏π≤≥≠±×÷]|\\(?:frac|sqrt|sum|int|cdot|le|ge)\b|\$")
_CODE = re.compile(r"```|\b(?:def|return|import|class|function|var|const|void|printf|print)\b|[{};]|==|->|=>")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")

FEATURE_NAMES = (
    "log_chars",
    "log_words",
    "log_lines",
    "log_numbers",
    "log_math_symbols",
    "log_code_markers",
    "log_question_marks",
    "log_non_ascii",
    "digit_fraction",
    "mean_word_length",
)


def prompt_features(prompts: Sequence[str]) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) float32 feature matrix."""
    return np.array([_one(p) for p in prompts], dtype=np.float32).reshape(len(prompts), len(FEATURE_NAMES))


def _one(prompt: str) -> list[float]:
    words = prompt.split()
    chars = max(len(prompt), 1)
    return [
        np.log1p(len(prompt)),
        np.log1p(len(words)),
        np.log1p(prompt.count("\n") + 1),
        np.log1p(len(_NUMBER.findall(prompt))),
        np.log1p(len(_MATH.findall(prompt))),
        np.log1p(len(_CODE.findall(prompt))),
        np.log1p(prompt.count("?")),
        np.log1p(len(_NON_ASCII.findall(prompt))),
        sum(c.isdigit() for c in prompt) / chars,
        sum(len(w) for w in words) / max(len(words), 1),
    ]
