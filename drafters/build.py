"""Build the drafter a `SpeculativeConfig` asks for: the engine's `DrafterFactory` (engine/drafting.py).

The engine never imports this module; whoever builds a speculating engine passes `build_drafter` to
it (the gateway's embedded backend, `turnout drafters eval`, the benchmarks).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from drafters.combined import FirstProposal
from drafters.ngram import NgramDrafter
from engine.drafting import Drafter
from engine.speculative import SpeculativeConfig

if TYPE_CHECKING:
    from engine.loader import LoadedModel

log = logging.getLogger(__name__)


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
