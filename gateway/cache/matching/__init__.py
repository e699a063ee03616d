"""Would the answer cached for one prompt do for another? The semantic cache's judgement, apart from storage.

The cache (gateway/cache/response_cache.py) finds the nearest earlier prompts in Redis; this package decides
whether one of them asks the same thing, cheapest evidence first:
- guards.py: lexical checks; the hard ones veto outright (numbers, negation, opposites, direction, ...);
- verifier.py: a small fitted model over the soft guards and overlap features, and, in its "aligned" and
  "contextual" variants, word-alignment scores (alignment.py over MiniLM's input table, contextual.py over
  its first transformer layers); models.py evaluates the fitted weights stored in weights/*.json;
- judge.py: a language model's last word on a candidate every cheaper check accepted.
Nothing here talks to Redis, and nothing here imports the rest of the cache.
"""

from typing import Literal

VerifierModel = Literal["lexical", "aligned", "contextual"]
"""The verifier's fitted models (verifier.py, models.py): the config's `cache.verifier_model`."""
