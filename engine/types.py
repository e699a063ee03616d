"""The embedded engine's public contract: what a caller hands in and what streams back.

The gateway's embedded backend and the standalone engine server depend only on these types,
so the scheduler and model code behind them can change freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "abort"]


class EngineError(Exception):
    """Base class for errors the engine reports to its caller."""


class EngineOverloaded(EngineError):
    """The waiting queue is full; the caller should answer 503 and let the client retry."""


class InvalidRequest(EngineError):
    """A parameter the engine cannot honour; `param` names it for the 400 response."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class SamplingParams:
    """Output-affecting parameters, validated by `validate()` before a request is queued."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    top_logprobs: int | None = None
    """None: no logprobs; n: each token's log-probability and the n likeliest alternatives (OpenAI's
    logprobs / top_logprobs), from the model's distribution before temperature and top-p."""

    def validate(self) -> None:
        if self.max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1", "max_tokens")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidRequest("temperature must be between 0 and 2", "temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest("top_p must be greater than 0 and at most 1", "top_p")
        if len(self.stop) > 4:
            raise InvalidRequest("at most 4 stop sequences are allowed", "stop")
        if self.top_logprobs is not None and not 0 <= self.top_logprobs <= 20:
            raise InvalidRequest("top_logprobs must be between 0 and 20", "top_logprobs")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


DEFAULT_PREFIX_CACHE_MB = 256.0
"""Memory for reusable prompt KV per model (~4,600 tokens of the 1.5B's KV in fp32, ~10,900 of the 0.5B's).
Here, not in engine/prefix_cache.py, so the gateway's config and CLIs can name it without importing torch."""


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache (OpenAI's prompt_tokens_details)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class SpecStats:
    """Speculative-decoding counters for one request (same meaning as vLLM's spec_decode_*)."""

    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_position: list[int] = field(default_factory=list)


@dataclass
class TokenLogprob:
    """One generated token's log-probability and the likeliest alternatives at its position."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Delta:
    """One step of output: new text (possibly empty while a stop string is undecided), new token ids,
    and on the last delta the finish reason and usage."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    spec: SpecStats | None = None
    logprobs: list[TokenLogprob] | None = None  # one per token id, when SamplingParams.top_logprobs is set

WeightFormat = Literal["fp32", "int8"]
"""What the embedded engine computes on: the float32 model, or its int8 conversion (engine/quantized.py)."""
DEFAULT_WEIGHTS: WeightFormat = "fp32"
