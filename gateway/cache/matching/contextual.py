"""Contextual word alignment of two prompts, for the semantic-hit verifier (verifier.py).

Why: the static alignment (alignment.py) compares words by MiniLM's input table, where a word means the
same in every sentence: "in"/"out" or "bold"/"remove" sit close, and a synonym the table does not know
("deduplicate" / "remove duplicates") stays unmatched. Here each word is MiniLM's own token output after the
first LAYERS transformer layers (BERTScore-style), so a word's vector carries its neighbours: "zoom" in
"zoom in" is not "zoom" in "zoom out". Every alphabetic word takes part, function words included (their
contextual vectors say what they attach to), weighted by SIF so that rare words count more.

Cost: one forward of the truncated model per prompt, cached per text; verified candidates are re-encoded,
the query once per lookup. LAYERS, MATCHED and STRICT were chosen by cross-validation on
bench/cache/pairs.jsonl (bench/cache/RESULTS.md).

Function words are matched and counted in the means, but not in the worst match nor the unmatched scores
(alignment.align_words), and the MLP is fitted with function-word rewordings of the tuning set's prompts as
extra paraphrases (bench/cache/train_verifier.py --reword): without either, a model learns "all words match
but one -> contrast" and takes "How can I X?" and "How do I X?" for different questions.

An added qualifier ("repot a *large* cactus") finds a partner at the MATCHED bar, and the two-sided sums
hide which side it is on: `one_sided` counts, per side, the words below STRICT, and the MLP is fitted with
qualifier additions of the tuning set as extra contrasts (train_verifier.py --qualify).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from gateway.cache.matching.alignment import Alignment, Words, align_words, one_sided, word_pieces

LAYERS = 2
"""Transformer layers run (of MiniLM's 6); the alignment uses the last one's token outputs."""
MATCHED = 0.5
"""Cosine between token outputs above which two words count as matched."""
STRICT = 0.7
"""A stricter match for the one-sided scores (alignment.one_sided): at MATCHED an added "large" or "iced"
still finds a partner in the other prompt; at STRICT it is left over."""
MAX_TOKENS = 256  # the encoder's own window


class ContextualAligner:
    """Runs MiniLM's first LAYERS layers on a prompt and aligns two prompts word by word."""

    def __init__(self, model_dir: Path | None = None, layers: int = LAYERS) -> None:
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        from router_models.encoder import bundled_model_dir
        from router_models.static import sif_weights

        model = model_dir or bundled_model_dir()
        self._tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._model = AutoModel.from_pretrained(str(model), local_files_only=True)
        self._model.encoder.layer = self._model.encoder.layer[:layers]  # the rest is never used
        self._model.eval()
        self._torch = torch
        self._sif = sif_weights(self._model.config.vocab_size)
        self.dim = int(self._model.config.hidden_size)
        self.words = functools.lru_cache(maxsize=4096)(self._words)

    def _words(self, text: str) -> Words:
        """Every alphabetic word, each the mean of its word-pieces' token outputs."""
        encoding = self._tokenizer.encode(text)  # with [CLS] and [SEP], as the encoder sees it
        positions, starts, content = word_pieces(text, encoding.word_ids, encoding.offsets, content_only=False)
        if not starts:
            return Words.empty(self.dim)
        torch = self._torch
        ids = torch.tensor([encoding.ids])
        with torch.inference_mode():
            hidden = self._model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 token_type_ids=torch.zeros_like(ids)).last_hidden_state[0].numpy()
        pieces = np.asarray(encoding.ids)[positions]
        return Words.pool(hidden[positions], self._sif[pieces], starts, content)

    def align(self, query: str, cached: str) -> Alignment:
        return align_words(self.words(query), self.words(cached), MATCHED)

    def one_sided(self, query: str, cached: str) -> tuple[float, float, float, float]:
        return one_sided(self.words(query), self.words(cached), STRICT)


@functools.cache
def shared_contextual_aligner() -> ContextualAligner:
    """One truncated model per process (about 60 MB of weights for 2 layers and the word-piece table)."""
    return ContextualAligner()
