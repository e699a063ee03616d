"""How the engine speculates, from one small config shared with the gateway's YAML and vLLM export."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from drafters.base import Drafter
from drafters.combined import FirstProposal
from drafters.ngram import NgramDrafter

if TYPE_CHECKING:
    from engine.loader import LoadedModel

log = logging.getLogger(__name__)

Method = Literal["none", "ngram", "draft_model", "ngram+draft_model", "eagle3"]


@dataclass(frozen=True)
class SpeculativeConfig:
    method: Method = "none"
    draft_model: str | None = None
    num_speculative_tokens: int = 4
    max_speculative_tokens: int = 16
    ngram_max: int = 4
    ngram_min: int = 1  # shortest suffix match a lookup drafts from (1 measured best, BENCHMARKS.md)
    draft_int8: bool = True
    draft_vocab: int = 32768  # draft among the most frequent tokens only (drafters/vocab.py); 0 = all
    max_batch: int = 4  # above this many running sequences, decode without drafts

    def __post_init__(self) -> None:
        if self.method in ("draft_model", "ngram+draft_model", "eagle3") and not self.draft_model:
            raise ValueError(f"speculative method {self.method!r} needs draft_model")
        if not 1 <= self.num_speculative_tokens <= self.max_speculative_tokens:
            raise ValueError("num_speculative_tokens must be between 1 and max_speculative_tokens")


def build_drafter(config: SpeculativeConfig, target: LoadedModel, *, progress: bool = True,
                  prefix_cache_mb: float = 0.0) -> Drafter | None:
    """`prefix_cache_mb`: memory for the draft model's own reusable prompt KV (0: none)."""
    if config.method == "none":
        return None
    if config.method == "eagle3":
        raise ValueError("eagle3 drafting runs in vLLM only; the embedded engine supports ngram and draft_model")
    drafters: list[Drafter] = []
    if "ngram" in config.method:
        drafters.append(NgramDrafter(max_ngram=config.ngram_max, min_ngram=config.ngram_min))
    if "draft_model" in config.method:
        from drafters.model import ModelDrafter
        from engine.loader import load_model
        from engine.store import resolve

        assert config.draft_model is not None
        draft = load_model(config.draft_model, resolve(config.draft_model, progress=progress),
                           device=str(target.device), max_context=target.context_length,
                           pack=not config.draft_int8)
        if draft.tokenizer.get_vocab() != target.tokenizer.get_vocab():
            raise ValueError(f"draft model {config.draft_model} does not share the target's tokenizer")
        from engine.prefix_cache import PrefixCache

        model_drafter = ModelDrafter(draft, target=target.model, int8=config.draft_int8,
                                     vocab=config.draft_vocab, prefix_cache=PrefixCache.of_megabytes(prefix_cache_mb))
        log.info("draft model %s: one draft step costs %.2f target steps", config.draft_model, model_drafter.cost)
        drafters.append(model_drafter)
    return drafters[0] if len(drafters) == 1 else FirstProposal(drafters)
