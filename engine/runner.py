"""Model forward passes for the scheduler: prefill one prompt, then step the whole batch.

`step` feeds each row a variable number of tokens (1 for plain decoding, 1 + k drafts when speculating)
in one forward pass and returns every fed position's logits, so verification costs one pass.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from engine.kv import BatchKV, cache_argument, cache_from_layers
from engine.loader import LoadedModel
from engine.prefix_cache import NO_MATCH, PrefixMatch


class ModelRunner:
    def __init__(self, loaded: LoadedModel):
        self.model = loaded.model
        self.device = loaded.device
        self.pad_id = loaded.tokenizer.pad_token_id or 0

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int], prefix: PrefixMatch = NO_MATCH
                ) -> tuple[torch.Tensor, DynamicCache, torch.Tensor]:
        """Run a prompt alone, after `prefix` (its first tokens' KV from the prefix cache); return the
        last position's logits, the prompt's cache and its validity mask."""
        cache = cache_from_layers(self.model.config, prefix.layers)
        ids = torch.tensor([prompt_ids[prefix.tokens :]], device=self.device)
        out = self.model(input_ids=ids, **cache_argument(cache), use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float().cpu(), cache, torch.ones((1, len(prompt_ids)), dtype=torch.bool)

    @torch.inference_mode()
    def step(self, kv: BatchKV, tokens: list[list[int]]) -> list[torch.Tensor]:
        """Append `tokens[r]` to row r; return logits of shape (len(tokens[r]), vocab) per row."""
        width = max(len(row) for row in tokens)
        input_ids = torch.full((kv.rows, width), self.pad_id, dtype=torch.long)
        fed = torch.zeros((kv.rows, width), dtype=torch.bool)
        for row, row_tokens in enumerate(tokens):
            input_ids[row, : len(row_tokens)] = torch.tensor(row_tokens)
            fed[row, : len(row_tokens)] = True
        positions = kv.lengths()[:, None] + torch.arange(width)[None, :]
        attention = torch.cat([kv.valid, fed], dim=1)
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=attention.long().to(self.device),
            position_ids=positions.to(self.device),
            **cache_argument(kv.cache),
            use_cache=True,
        )
        kv.valid = attention
        logits = out.logits.float().cpu()
        return [logits[row, : len(row_tokens)] for row, row_tokens in enumerate(tokens)]
