"""One request's state inside the scheduler, and how accepted tokens become Deltas."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from engine.adaptive import AdaptiveK
from engine.detok import IncrementalDetokenizer, StopStringFilter
from engine.types import Delta, FinishReason, SamplingParams, SpecStats, TokenLogprob, Usage

_ids = itertools.count()


@dataclass
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    emit: Callable[[Delta], None]
    generator: torch.Generator
    detokenizer: IncrementalDetokenizer
    stop_filter: StopStringFilter
    eos_token_ids: frozenset[int]
    speculative: bool = True
    reference_ids: list[int] = field(default_factory=list)
    cache_scope: str = ""  # prefix-cache namespace (the gateway's tenant): KV is reused only within it
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache instead of prefilled
    draft_start_k: int = 4  # speculative.num_speculative_tokens: each source's k until it has been verified
    draft_k_max: int = 16
    draft_lengths: dict[str, AdaptiveK] = field(default_factory=dict)  # per drafter (Draft.source)
    id: int = field(default_factory=lambda: next(_ids))
    output_ids: list[int] = field(default_factory=list)
    next_token: int | None = None  # sampled, not yet fed to the model
    finish_reason: FinishReason | None = None
    cancelled: bool = False
    spec: SpecStats = field(default_factory=SpecStats)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - len(self.output_ids)

    def draft_k(self, source: str, cost: float) -> int:
        length = self.draft_lengths.get(source)
        if length is None:
            length = self.draft_lengths[source] = AdaptiveK(k=self.draft_start_k, k_max=self.draft_k_max,
                                                            draft_cost=cost)
        return length.k

    def record_speculation(self, source: str, proposed: int, accepted: int) -> None:
        self.spec.num_drafts += 1
        self.spec.num_draft_tokens += proposed
        self.spec.num_accepted_tokens += accepted
        per_position = self.spec.accepted_per_position
        per_position.extend([0] * (proposed - len(per_position)))
        for position in range(accepted):
            per_position[position] += 1
        if source in self.draft_lengths:
            self.draft_lengths[source].update(proposed, accepted)

    def accept(self, tokens: list[int], logprobs: list[TokenLogprob] | None = None) -> None:
        """Take newly generated tokens (in order), stream their text, and finish on EOS/stop/length.
        `logprobs`, when asked for, has one entry per token and travels with the tokens taken."""
        taken: list[int] = []
        for token in tokens:
            if token in self.eos_token_ids and not self.params.ignore_eos:
                self.finish_reason = "stop"
                break
            taken.append(token)
            self.output_ids.append(token)
            if self.stop_filter.stopped or len(self.output_ids) >= self.max_new_tokens:
                break
        text = self.stop_filter.push(self.detokenizer.push(taken))
        if self.stop_filter.stopped:
            self.finish_reason = "stop"
        elif self.finish_reason is None and len(self.output_ids) >= self.max_new_tokens:
            self.finish_reason = "length"
        taken_logprobs = logprobs[: len(taken)] if logprobs is not None else None
        if self.finish_reason is None:
            self.next_token = taken[-1]
            if text or taken:
                self.emit(Delta(text=text, token_ids=taken, logprobs=taken_logprobs))
            return
        text += self.stop_filter.flush()
        usage = Usage(prompt_tokens=len(self.prompt_ids), completion_tokens=len(self.output_ids),
                      cached_tokens=self.cached_tokens)
        spec = self.spec if self.spec.num_drafts else None
        self.emit(Delta(text=text, token_ids=taken, finish_reason=self.finish_reason, usage=usage, spec=spec,
                        logprobs=taken_logprobs))
