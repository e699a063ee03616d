"""Next-token log-probabilities after a fixed prompt prefix, whose KV cache is computed once.

Why: a classifier prompt (instructions and worked examples, a few hundred tokens) is the same for every
call and only its last few dozen tokens change; prefilling the prefix once makes each call a short
prefill, about a tenth of the full prompt's cost on a CPU. Calls are serialised on one cache, which is
cropped back to the prefix after each.
"""

from __future__ import annotations

import threading

import torch
from transformers import DynamicCache

from engine.cpu_share import CPU_SHARE
from engine.kv import cache_argument, crop_cache
from engine.loader import LoadedModel


class PrefixScorer:
    def __init__(self, loaded: LoadedModel, prefix_ids: list[int]):
        if not prefix_ids:
            raise ValueError("the prefix must not be empty")
        self.loaded = loaded
        self.prefix_ids = list(prefix_ids)
        self._lock = threading.Lock()
        self._cache: DynamicCache | None = None

    @torch.inference_mode()
    def warm(self) -> DynamicCache:
        """Prefill the prefix now rather than on the first call (blocking)."""
        with self._lock, CPU_SHARE.torch_threads():
            return self._prefix_cache()

    @torch.inference_mode()
    def next_token_logprobs(self, ids: list[int]) -> torch.Tensor:
        """Log-probabilities of the token after `ids`, which must start with the prefix (blocking)."""
        prefix_length = len(self.prefix_ids)
        if ids[:prefix_length] != self.prefix_ids or len(ids) == prefix_length:
            raise ValueError("ids must extend the scorer's prefix")
        with self._lock, CPU_SHARE.torch_threads():  # an engine with work steps on fewer threads
            cache = self._prefix_cache()
            try:
                out = self.loaded.model(input_ids=self._tensor(ids[prefix_length:]), **cache_argument(cache),
                                        use_cache=True, logits_to_keep=1)
            finally:
                crop_cache(cache, prefix_length)
        return torch.log_softmax(out.logits[0, -1].float().cpu(), dim=-1)

    def _prefix_cache(self) -> DynamicCache:
        if self._cache is None:
            cache = DynamicCache(config=self.loaded.model.config)
            self.loaded.model(input_ids=self._tensor(self.prefix_ids), **cache_argument(cache), use_cache=True,
                              logits_to_keep=1)
            self._cache = cache
        return self._cache

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], device=self.loaded.device)
