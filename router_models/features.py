"""Cheap surface features of a prompt that mean "hard" across kinds of prompts, not just MMLU.

Length, numbers and math notation, code, and the number of questions asked are visible in a math
word problem or a chat turn just as in an exam question; the head combines them with the embedding.
Each feature is a compressed count (log1p) so a few extreme prompts cannot dominate a linear head.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_MATH = re.compile(r"[=+*/^<>√∫∑∏π≤≥≠±×÷]|\\(?:frac|sqrt|sum|int|cdot|le|ge)\b|\$")
_CODE = re.compile(r"```|\b(?:def|return|import|class|function|var|const|void|printf|print)\b|[{};]|==|->|=>")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")

_FEATURES: dict[str, Callable[[str], float]] = {
    "log_chars": lambda p: math.log1p(len(p)),
    "log_words": lambda p: math.log1p(len(p.split())),
    "log_lines": lambda p: math.log1p(p.count("\n") + 1),
    "log_numbers": lambda p: math.log1p(len(_NUMBER.findall(p))),
    "log_math_symbols": lambda p: math.log1p(len(_MATH.findall(p))),
    "log_code_markers": lambda p: math.log1p(len(_CODE.findall(p))),
    "log_question_marks": lambda p: math.log1p(p.count("?")),
    "log_non_ascii": lambda p: math.log1p(len(_NON_ASCII.findall(p))),
    "digit_fraction": lambda p: sum(c.isdigit() for c in p) / max(len(p), 1),
    "mean_word_length": lambda p: sum(len(w) for w in p.split()) / max(len(p.split()), 1),
}
FEATURE_NAMES = tuple(_FEATURES)


def prompt_features(prompts: Sequence[str], names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
    """(n, len(names)) float32 feature matrix. Only the named features are computed: the regex ones
    cost ~0.1 ms per long prompt, ten times the whole head, and the shipped heads use only length."""
    functions = [_FEATURES[name] for name in names]
    return np.array([[f(p) for f in functions] for p in prompts], dtype=np.float32).reshape(len(prompts), len(names))
