"""Shared bench helpers: timing a streamed generation and printing a markdown table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: keeps this module torch-free for bench/engine/llamacpp.py's venv
    from engine.engine import Engine
    from engine.types import SamplingParams


@dataclass
class Timing:
    tokens: int
    ttft_s: float
    total_s: float
    accepted: int = 0
    drafted: int = 0
    token_ids: list[int] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s

    @property
    def decode_s(self) -> float:
        """Time after the first token: what speculation can change (prefill is the same either way)."""
        return self.total_s - self.ttft_s


async def timed_generate(engine: Engine, prompt: str | list[dict[str, str]], params: SamplingParams,
                         **options) -> Timing:
    """`prompt`: one user message's text, or the whole message list."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    ids = engine.encode_chat(messages)
    start = time.perf_counter()
    first = None
    accepted = drafted = 0
    token_ids: list[int] = []
    async for delta in engine.generate(ids, params, **options):
        if first is None:
            first = time.perf_counter() - start
        token_ids += delta.token_ids
        if delta.spec:
            accepted, drafted = delta.spec.num_accepted_tokens, delta.spec.num_draft_tokens
    return Timing(len(token_ids), first or 0.0, time.perf_counter() - start, accepted, drafted, token_ids)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
