"""How the engine speculates: one small config, the only definition of it.

The gateway's YAML (`speculative:` of a deployment) validates straight into this dataclass, the
drafters build themselves from it (drafters/build.py) and `turnout vllm-args` turns it into vLLM's
`--speculative-config` (drafters/vllm.py), so the three cannot drift apart. Plain Python: reading a
config never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Method = Literal["none", "ngram", "draft_model", "ngram+draft_model", "eagle3"]


@dataclass(frozen=True)
class SpeculativeConfig:
    method: Method = "none"
    draft_model: str | None = None
    num_speculative_tokens: int = 4  # each drafter's k until its drafts have been verified (engine/adaptive.py)
    max_speculative_tokens: int = 16
    ngram_max: int = 4  # lookups: longest suffix matched (vLLM's prompt_lookup_max)
    ngram_min: int = 1  # shortest suffix match a lookup drafts from (1 measured best, BENCHMARKS.md)
    draft_int8: bool = True
    draft_vocab: int = 32768  # draft among the most frequent tokens only (drafters/vocab.py); 0 = all
    max_batch: int = 4  # above this many running sequences, decode without drafts

    def __post_init__(self) -> None:
        if self.method == "eagle3" and not self.draft_model:
            raise ValueError("speculative method 'eagle3' needs draft_model: the EAGLE-3 head trained for the "
                             "target model (a Hugging Face repo or a local dir); vLLM has nothing to draft with "
                             "without one")
        if self.method in ("draft_model", "ngram+draft_model") and not self.draft_model:
            raise ValueError(f"speculative method {self.method!r} needs draft_model")
        if not 1 <= self.num_speculative_tokens <= self.max_speculative_tokens:
            raise ValueError("num_speculative_tokens must be between 1 and max_speculative_tokens")
        if self.ngram_min < 1:
            raise ValueError("ngram_min must be >= 1")
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min ({self.ngram_min}) must not exceed ngram_max ({self.ngram_max})")
        if self.draft_vocab < 0:
            raise ValueError("draft_vocab must be >= 0 (0: the whole vocabulary)")

    @property
    def enabled(self) -> bool:
        return self.method != "none"
