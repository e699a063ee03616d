"""How a chat is scored: as its hardest user turn.

A follow-up ("and now in Rust?", "make it shorter") is short and, scored alone, looks easy; the question
it follows decides how hard the conversation is. Scoring the user turns and keeping the highest never
moves a conversation from the large model to the small one between turns, so it keeps one voice and
the large engine keeps reusing the KV it holds for it. The gateway's policy and `turnout router
score|calibrate` use these functions, so a threshold calibrated on logged chats matches live routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from .base import Router

TurnsMode = Literal["conversation", "last"]
ROUTED_TURNS = 8  # user turns a conversation's score looks at: the first (it usually sets the task) and the last 7


def routed_turns(turns: Sequence[str], mode: TurnsMode = "conversation") -> list[str]:
    """The turns a router scores, the last one last: all of them up to ROUTED_TURNS (the first and the
    latest beyond that, which bounds the cost of long chats), or only the last one."""
    turns = list(turns) or [""]
    if mode == "last":
        return turns[-1:]
    return turns if len(turns) <= ROUTED_TURNS else [turns[0], *turns[1 - ROUTED_TURNS:]]


def score_conversations(router: Router, conversations: Sequence[Sequence[str]],
                        mode: TurnsMode = "conversation") -> np.ndarray:
    """One score per conversation (its user turns): the highest of its routed turns' scores, all turns
    scored in one batch. A single-turn conversation scores exactly as its prompt."""
    routed = [routed_turns(turns, mode) for turns in conversations]
    scores = np.asarray(router.score([turn for turns in routed for turn in turns]), dtype=np.float64)
    ends = np.cumsum([len(turns) for turns in routed])
    return np.array([scores[end - len(turns) : end].max() for turns, end in zip(routed, ends, strict=True)])
