"""Draft-model drafting: a smaller model with the same tokenizer proposes k tokens autoregressively.

A draft step has to cost a small fraction of a target step to pay off: the 0.5B draft in fp32 costs
about 0.4 of the 1.5B target per token on this CPU. int8 weights (drafters/quantize.py) bring that to
about 0.12 while keeping most of its agreement with the target; the target verifies every token, so
the output never changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel

from drafters.costs import draft_step_cost
from drafters.quantize import quantize_draft
from drafters.vocab import frequent_tokens, restrict_head
from engine.drafting import Draft, DraftContext
from engine.kv import cache_argument, cache_from_layers, cache_layers, crop_cache
from engine.loader import LoadedModel
from engine.prefix_cache import NO_MATCH, PrefixCache, common_prefix
from engine.sampling import make_generator, probabilities
from engine.smoothquant import CALIBRATION_TEXT
from engine.store import turnout_home


@dataclass
class _State:
    cache: DynamicCache
    consumed: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None


class ModelDrafter:
    def __init__(self, loaded: LoadedModel, *, target: PreTrainedModel, int8: bool = True,
                 vocab: int = 0, threads: int | None = 1, prefix_cache: PrefixCache | None = None):
        """`vocab`: draft only among this many most frequent tokens (drafters/vocab.py); 0 for all.
        `threads`: one by default, whatever the target steps on: the int8 draft's one-row products do
        not get faster on two (34 ms per draft forward on one thread, 40 on two, beside a two-thread
        target here); None follows the engine.
        `prefix_cache`: the draft model's own, so a new sequence skips the draft prefill of a prompt
        start it has seen (as the target does)."""
        self.name = f"draft_model:{loaded.model_id}"
        self.model = loaded.model
        self.kept_tokens = frequent_tokens(loaded.tokenizer, vocab) if vocab else None
        if self.kept_tokens is not None:
            restrict_head(self.model, self.kept_tokens)
        if int8:
            calibration = loaded.tokenizer.encode(CALIBRATION_TEXT.read_text(), add_special_tokens=False)
            cache_dir = turnout_home() / "calibration" / _slug(loaded.model_id)
            self.model = quantize_draft(self.model, calibration, cache_dir)
        self.target_vocab: int = target.config.vocab_size
        self.cost = draft_step_cost(self.model, target)  # what adaptive k weighs a drafted token at
        self.threads = threads
        self.prefix_cache = prefix_cache
        self._states: dict[int, _State] = {}

    @torch.inference_mode()
    def propose(self, seq: DraftContext, k: int, *, greedy: bool) -> Draft:
        k = min(k, seq.draft_k(self.name, self.cost))
        if k <= 0:
            return Draft(tokens=[])
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._propose(seq, k, greedy)
        finally:
            torch.set_num_threads(previous)

    def _propose(self, seq: DraftContext, k: int, greedy: bool) -> Draft:
        ids = seq.all_ids
        state = self._states.get(seq.id)
        if state is None:
            prefix = self.prefix_cache.match(seq.cache_scope, ids) if self.prefix_cache is not None else NO_MATCH
            state = self._states[seq.id] = _State(cache=cache_from_layers(self.model.config, prefix.layers),
                                                  consumed=ids[: prefix.tokens])
            if not greedy:
                state.generator = make_generator(seq.params.seed)
        keep = min(common_prefix(state.consumed, ids), len(ids) - 1)
        crop_cache(state.cache, keep)
        logits = self._forward(ids[keep:], state.cache)
        tokens: list[int] = []
        rows: list[torch.Tensor] = []
        for i in range(k):
            if greedy:
                token = int(torch.argmax(logits))
            else:
                p = probabilities(logits, seq.params)
                token = int(torch.multinomial(p, 1, generator=state.generator))
                rows.append(p)
            tokens.append(token)
            if i < k - 1:
                logits = self._forward([token], state.cache)
        state.consumed = ids + tokens[:-1]
        return Draft(tokens=tokens, probs=torch.stack(rows) if rows else None, source=self.name)

    def _forward(self, ids: list[int], cache: DynamicCache) -> torch.Tensor:
        out = self.model(input_ids=torch.tensor([ids]), **cache_argument(cache), use_cache=True, logits_to_keep=1)
        logits: torch.Tensor = out.logits[0, -1].float()
        if self.kept_tokens is not None:  # back to the full vocabulary; tokens left out are never proposed
            logits = logits.new_full((self.target_vocab,), float("-inf")).index_copy_(0, self.kept_tokens, logits)
        if logits.shape[0] < self.target_vocab:  # draft vocab padded differently: never propose the rest
            logits = torch.cat([logits, logits.new_full((self.target_vocab - logits.shape[0],), float("-inf"))])
        return logits[: self.target_vocab]

    def release(self, seq: DraftContext) -> None:
        state = self._states.pop(seq.id, None)
        if state is not None and self.prefix_cache is not None:  # the cache holds exactly `consumed`
            self.prefix_cache.store(seq.cache_scope, state.consumed, cache_layers(state.cache))


def _slug(model_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in model_id)
