"""The small model's own uncertainty over a prompt as a routing signal, with no training at all.

A head trained on MMLU learns MMLU's topics, which do not carry over to open-ended chat. How
surprised the small model is by the prompt's own tokens (mean negative log-probability per token)
is about the small model rather than about one benchmark: prompts far from what it has seen, in
wording or subject, are where it is likely to answer worse. Nothing is fitted, so no validation
set can leak into it.

The prompt is scored inside the small model's user-turn header from its chat template (e.g.
`<|im_start|>user\n`), so its first token has context too; the template's default system turn is
left out, it would only add cost. Prompts are truncated to `max_tokens` to bound the cost of huge ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_MAX_TOKENS = 256  # what bench/router/surprisal_apgr.py measures
_MARK = "\x00PROMPT\x00"


class SurprisalEncoder:
    """`embed` returns (n, 1) float32: each prompt's mean surprisal in nats per token.

    Shaped as an encoder so router_models.embedding_cache can cache it like any embedding.
    """

    def __init__(self, model: str = DEFAULT_MODEL, max_tokens: int = DEFAULT_MAX_TOKENS, batch_size: int = 16,
                 loaded: Any = None) -> None:
        self.model_name = model
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.name = f"{model}-surprisal-{max_tokens}"
        self._loaded = loaded
        self._prefix: list[int] | None = None

    def _load(self) -> Any:
        if self._loaded is None:
            from engine.loader import load_model
            from engine.store import resolve

            self._loaded = load_model(self.model_name, resolve(self.model_name, progress=False), device="cpu")
        return self._loaded

    def _prompt_prefix(self, tokenizer: Any) -> list[int]:
        """Token ids of the chat template's user-turn header: from the template's last turn opening (its
        first token's last occurrence) to where the user's text starts."""
        if self._prefix is None:
            try:
                text = tokenizer.apply_chat_template([{"role": "user", "content": _MARK}], tokenize=False)
                prefix_text = text.split(_MARK)[0]
            except (ValueError, AttributeError):
                prefix_text = ""
            ids = tokenizer.encode(prefix_text, add_special_tokens=False) if prefix_text else []
            if ids:
                ids = ids[len(ids) - 1 - ids[::-1].index(ids[0]):]
            else:
                bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
                ids = [bos]
            self._prefix = ids
        return self._prefix

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), 1), dtype=np.float32)
        if not texts:
            return out
        loaded = self._load()
        tokenizer, model = loaded.tokenizer, loaded.model
        prefix = self._prompt_prefix(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        encoded = [tokenizer.encode(t, add_special_tokens=False)[: self.max_tokens] or [pad] for t in texts]
        order = np.argsort([len(e) for e in encoded])  # similar lengths per batch: little padding
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                sequences = [prefix + encoded[i] for i in rows]
                width = max(len(s) for s in sequences)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, seq in enumerate(sequences):
                    ids[r, : len(seq)] = torch.tensor(seq)
                    mask[r, : len(seq)] = 1
                logits = model(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device)).logits
                logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                token_logprob = logprobs.gather(2, ids[:, 1:, None].to(logprobs.device))[..., 0].cpu()
                for r, i in enumerate(rows):
                    scored = token_logprob[r, len(prefix) - 1 : len(sequences[r]) - 1]
                    out[i, 0] = float(-scored.mean())
        return out


class SurprisalRouter:
    """A `Router`: the higher the small model's mean surprisal over the prompt, the higher the score.

    score = s / (s + midpoint) for mean surprisal s (nats/token); only the ranking matters for routing,
    the midpoint only places 0.5. Surprisals are cached on disk when `cache_dir` is given.
    """

    needs_embeddings = False

    def __init__(self, encoder: SurprisalEncoder | None = None, midpoint: float = 3.0,
                 cache_dir: Any = None) -> None:
        self.encoder = encoder or SurprisalEncoder()
        self.midpoint = midpoint
        self.cache_dir = cache_dir
        self.name = "surprisal"

    def surprisal(self, prompts: Sequence[str]) -> np.ndarray:
        if self.cache_dir is None:
            return self.encoder.embed(list(prompts))[:, 0].astype(np.float64)
        from pathlib import Path

        from .embedding_cache import cached_embed

        return cached_embed(self.encoder, list(prompts), Path(self.cache_dir), show_progress=True)[:, 0].astype(
            np.float64)

    def score(self, prompts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        if len(prompts) == 0:
            return np.zeros(0)
        s: np.ndarray = np.maximum(self.surprisal(prompts), 0.0)
        return s / (s + self.midpoint)
