"""Verification: decide how many draft tokens the target accepts, and the token that follows.

Greedy: accept the longest prefix that equals the target's argmax, then the target's own next token
— output is token-identical to decoding without drafts.
Sampling: rejection sampling (Leviathan et al. 2023; Chen et al. 2023): accept draft x with probability
min(1, p(x)/q(x)); on rejection draw from normalise(max(0, p − q)). The output distribution is exactly
the target's p, whatever the drafter proposes. A deterministic drafter has q = point mass at x.
"""

from __future__ import annotations

import torch

from engine.drafting import Draft
from engine.sampling import probabilities
from engine.types import SamplingParams


def verify(logits: torch.Tensor, draft: Draft, params: SamplingParams,
           generator: torch.Generator) -> tuple[int, int]:
    """`logits` has one row per fed position (the last accepted token, then each draft token).
    Returns (number of draft tokens accepted, the next token)."""
    if params.greedy:
        return _verify_greedy(logits, draft.tokens)
    return _verify_sampled(logits, draft, params, generator)


def _verify_greedy(logits: torch.Tensor, drafts: list[int]) -> tuple[int, int]:
    choices = torch.argmax(logits, dim=-1).tolist()
    accepted = 0
    while accepted < len(drafts) and choices[accepted] == drafts[accepted]:
        accepted += 1
    return accepted, choices[accepted]


def _verify_sampled(logits: torch.Tensor, draft: Draft, params: SamplingParams,
                    generator: torch.Generator) -> tuple[int, int]:
    target = probabilities(logits, params)
    for i, token in enumerate(draft.tokens):
        p = target[i]
        q_token = 1.0 if draft.probs is None else float(draft.probs[i, token])
        if float(torch.rand((), generator=generator)) * q_token < float(p[token]):
            continue
        if draft.probs is None:
            residual = p.clone()
            residual[token] = 0.0
        else:
            residual = torch.clamp(p - draft.probs[i], min=0.0)
        if float(residual.sum()) <= 0.0:  # p == q: nothing left to correct towards
            residual = p
        return i, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
    return len(draft.tokens), int(torch.multinomial(target[len(draft.tokens)], 1, generator=generator))
