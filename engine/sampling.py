"""Next-token choice from logits: greedy, or temperature + nucleus (top-p) sampling.

Each sequence owns a seeded torch.Generator, so a seeded request draws the same tokens whether it
runs alone or inside a batch.
"""

from __future__ import annotations

import torch

from engine.types import SamplingParams, TokenLogprob


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def probabilities(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution sampling draws from (after temperature and top-p), float32 on CPU.
    Works on (..., vocab); speculative verification needs the same distribution."""
    logits = logits.float().cpu() / params.temperature
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        drop = cumulative - sorted_probs > params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token from a (vocab,) logits row."""
    if params.greedy:
        return int(torch.argmax(logits))
    return int(torch.multinomial(probabilities(logits, params), 1, generator=generator))


def token_logprobs(logits: torch.Tensor, tokens: list[int], top: int | None) -> list[TokenLogprob] | None:
    """Row i of `logits` scored tokens[i]: its log-probability and the `top` likeliest alternatives, under
    the model's own distribution (before temperature and top-p, as vLLM reports by default). None when
    nobody asked (`top` None): the common case costs nothing."""
    if top is None:
        return None
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    best = torch.topk(logprobs, top, dim=-1) if top else None
    return [TokenLogprob(token, float(logprobs[i, token]),
                         list(zip(best.indices[i].tolist(), best.values[i].tolist(), strict=True)) if best else [])
            for i, token in enumerate(tokens)]
