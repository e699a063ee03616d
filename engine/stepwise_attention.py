"""Attention for the engine's multi-token steps that gives each query what a one-token step would.

Why: a verify step feeds a row its last token and k drafts at once, and speculative decoding promises
the same output as decoding one token at a time. The linear layers are batch-invariant (packed fp32,
int8: engine/packed_linear.py, engine/int8_linear.py), but SDPA over k+1 queries does not reduce in the
same order as over one, and a row in a padded batch reduces over masked columns a row alone does not
have, so the attention output differs in the last bits; int8 activations round those bits to whole steps
now and then, and greedy decoding flips at a near-tie. Here every query of a step of up to
`MAX_STEP_WIDTH` tokens runs as its own unmasked one-query SDPA over exactly the cache columns it may see
(a view where they are contiguous, a gathered copy where rejected drafts left holes): the same call a
lone one-token step at that position makes, so a row gets bitwise the same logits alone, in a batch, or
with drafts. A whole prompt's prefill (no cache before it, or wider than `MAX_STEP_WIDTH`) takes the
plain path: a prompt prefilled after a cached prefix is near, not bitwise, the same as prefilled whole.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

STEPWISE = "turnout_stepwise"
MAX_STEP_WIDTH = 32


def stepwise_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    width, keys = query.shape[2], key.shape[2]
    if width > MAX_STEP_WIDTH or (attention_mask is None and (width == 1 or keys == width)):
        output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        return output, None
    rows = []
    for b in range(query.shape[0]):
        outputs = []
        for j in range(width):
            columns = _visible_columns(attention_mask, b, j, keys - (width - 1 - j))
            if isinstance(columns, slice):
                k, v = key[b : b + 1, :, columns], value[b : b + 1, :, columns]
            else:
                k, v = key[b : b + 1].index_select(2, columns), value[b : b + 1].index_select(2, columns)
            output, _ = sdpa_attention_forward(module, query[b : b + 1, :, j : j + 1], k, v, None, **kwargs)
            outputs.append(output)
        rows.append(torch.cat(outputs, dim=1))
    return torch.cat(rows, dim=0), None


def _visible_columns(mask: torch.Tensor | None, row: int, query: int, causal_end: int) -> slice | torch.Tensor:
    """The cache columns query `query` of batch row `row` attends to: a range where they are contiguous
    (left padding only), else their indices (holes left by rejected drafts)."""
    if mask is None:
        return slice(0, causal_end)
    allowed = mask[row, 0, query, :causal_end]
    if allowed.dtype != torch.bool:
        allowed = allowed == 0  # an additive float mask: 0 where attended, -inf where not
    columns = allowed.nonzero().flatten()
    first, last = int(columns[0]), int(columns[-1])
    if last - first + 1 == len(columns):
        return slice(first, last + 1)
    return columns


AttentionInterface.register(STEPWISE, stepwise_sdpa)
AttentionMaskInterface.register(STEPWISE, sdpa_mask)
