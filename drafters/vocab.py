"""A draft head over the most frequent tokens only (FR-Spec: Zhao et al. 2025, frequency-ranked drafting).

The output projection is the largest single matrix of a small draft model (the 0.5B Qwen's is 136M of
its ~490M weights read per step: vocabulary 151,936 × 896) and, with the step bound by reading weights,
a quarter of its cost. Most of that vocabulary is rare: the 32,768 most frequent tokens cover 98% of
ShareGPT text. A draft restricted to them proposes nothing else — a rare token the target wants is a
rejection, and the target supplies it — so the output is unchanged and a draft step costs ~25% less.

Frequency ranks are per tokenizer, shipped in token_ranks/<vocabulary hash>.npy (built by
bench/spec/token_frequency.py); for a tokenizer without one the full head is kept.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

RANKS_DIR = Path(__file__).with_name("token_ranks")


def vocabulary_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16]


def frequent_tokens(tokenizer: PreTrainedTokenizerBase, limit: int) -> torch.Tensor | None:
    """Sorted ids of the `limit` most frequent tokens plus every special token, or None when no ranks
    are shipped for this tokenizer."""
    path = RANKS_DIR / f"{vocabulary_hash(tokenizer)}.npy"
    if not path.exists():
        return None
    ranked = np.load(path)[:limit].tolist()
    special = [token_id for token_id in tokenizer.added_tokens_decoder]
    return torch.tensor(sorted(set(ranked) | set(special)))


def restrict_head(model: PreTrainedModel, keep: torch.Tensor) -> None:
    """Replace the output projection by its rows for `keep` (logits come out in `keep`'s order)."""
    head: torch.nn.Linear = model.get_output_embeddings()  # type: ignore[no-untyped-call]  # transformers: untyped
    restricted = torch.nn.Linear(head.in_features, len(keep), bias=head.bias is not None)
    with torch.no_grad():
        restricted.weight.copy_(head.weight[keep])
        if head.bias is not None:
            restricted.bias.copy_(head.bias[keep])
    model.set_output_embeddings(restricted)  # type: ignore[no-untyped-call]  # transformers: untyped
