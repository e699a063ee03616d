"""A language model's last word on a semantic hit: would the cached answer to one request answer the other?

Why: the guards and the learned verifier compare words, and the false hits they let through are the
ones only meaning separates — a swapped object (rice on the stove / in a microwave), an added condition
(a birdhouse / a birdhouse for bluebirds), a comparative (stronger / weaker coffee). An instruct model
asked "same answer for both?" with a few worked examples separates these well (bench/cache/RESULTS.md),
and it runs only on candidates every cheaper check accepted, i.e. on would-be hits, each of which saves a
whole generation.

A judge answers with log-odds, log P(yes) − log P(no) of its next token, not with a decision: the cache
adds the verifier's own log-odds, weighted (`cache.judge_prior_weight`), and holds the sum against
`cache.judge_min_log_odds`. Two evidences of different kinds, summed, separate better than two bars one
after the other (bench/cache/RESULTS.md).

Two ways to ask, one question (`judge_messages`):
- `EngineJudge`: an in-process model; the instructions and examples are prefilled once
  (engine.prefix_scorer), so a call prefills only the two requests.
- `BackendJudge`: any backend (vLLM, an OpenAI-compatible server): one greedy token with its top logprobs.
  Servers with prefix caching (vLLM) reuse the examples' KV cache themselves.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from gateway.backends.base import Backend, BackendError
from gateway.types import BackendRequest

if TYPE_CHECKING:  # torch and transformers load only with an in-process model, never in a gateway without one
    from engine.loader import LoadedModel
    from gateway.balancer import Replica

log = logging.getLogger("turnout.cache.judge")

INSTRUCTIONS = (
    "You check a chatbot's answer cache. A cached answer to Request 1 may be reused for Request 2 only if "
    "both ask for exactly the same thing, so that the same answer is complete and correct for both. "
    "Rewording does not matter: other words, word order, tone or length with the same meaning is the same "
    "request. Anything that changes the answer matters: a different or sibling object, tool, place, amount, "
    "direction or condition; an added or removed detail; or a different question about the same subject. "
    "Reply with yes or no."
)
# Worked examples, written for this prompt (none is in a labelled pair set of bench/cache): heavy rewordings
# that are the same request, and the kinds of contrast a small judge let through with fewer examples (a
# sibling vegetable, another question about the same crampons).
EXAMPLES = (
    ("How do I boil an egg?", "What's the way to hard-boil eggs?", "yes"),
    ("How do I convert a list to a string in Python?", "How do I convert a list to a set in Python?", "no"),
    ("My car's windscreen fogs up on the inside every morning - what can I do?",
     "How do I stop the inside of my car windshield misting over in the mornings?", "yes"),
    ("How do I unclog a sink?", "How do I unclog a kitchen sink without chemicals?", "no"),
    ("Which city is the capital of Australia?", "What is Australia's capital city?", "yes"),
    ("How long do I steam cauliflower florets?", "How long do I steam green beans?", "no"),
    ("How can I learn Spanish quickly?", "Best way to learn Spanish fast?", "yes"),
    ("How do I fit crampons to my hiking boots?", "How do I sharpen the points of my crampons?", "no"),
    ("How do I increase the font size in VS Code?", "How do I decrease the font size in VS Code?", "no"),
    ("Could you explain how a sextant works?", "sextant - how does it work?", "yes"),
)


def _question(cached_prompt: str, prompt: str) -> str:
    return f"Request 1: {cached_prompt}\nRequest 2: {prompt}\nSame answer for both?"


def judge_messages(cached_prompt: str, prompt: str) -> list[dict[str, str]]:
    """The chat sent to the judge; everything before the last message is the same for every call."""
    messages = [{"role": "system", "content": INSTRUCTIONS}]
    for first, second, verdict in EXAMPLES:
        messages += [{"role": "user", "content": _question(first, second)},
                     {"role": "assistant", "content": verdict}]
    return [*messages, {"role": "user", "content": _question(cached_prompt, prompt)}]


class Judge(Protocol):
    async def log_odds(self, cached_prompt: str, prompt: str) -> float:
        """log P(yes) − log P(no): would the answer cached for `cached_prompt` do for `prompt`?"""
        ...

    async def warm(self) -> None:
        """Do the one-off work now (an in-process judge prefills its examples: seconds on a CPU)."""
        ...


class EngineJudge:
    """Judges with an in-process model (blocking work runs in a worker thread)."""

    def __init__(self, loaded: LoadedModel):
        from engine.prefix_scorer import PrefixScorer

        self.tokenizer = loaded.tokenizer
        self._scorer = PrefixScorer(loaded, self._encode(judge_messages("", "")[:-1], generation_prompt=False))
        self._yes = self._first_tokens("yes", "Yes")
        self._no = self._first_tokens("no", "No")

    async def log_odds(self, cached_prompt: str, prompt: str) -> float:
        # Tokenise here, on the event loop like the engine's other callers: a fast tokenizer used from two
        # threads at once can fail with "Already borrowed" (huggingface/tokenizers#537). Only the forward
        # pass goes to a worker thread.
        ids = self._encode(judge_messages(cached_prompt, prompt))
        return await asyncio.to_thread(self._log_odds, ids)

    def _log_odds(self, ids: list[int]) -> float:
        """The verdict for the tokenised judge chat (blocking)."""
        logprobs = self._scorer.next_token_logprobs(ids)
        return float(logprobs[self._yes].logsumexp(0) - logprobs[self._no].logsumexp(0))

    async def warm(self) -> None:
        await asyncio.to_thread(self._scorer.warm)

    def _encode(self, messages: list[dict[str, str]], *, generation_prompt: bool = True) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def _first_tokens(self, *words: str) -> list[int]:
        return sorted({self.tokenizer.encode(word, add_special_tokens=False)[0] for word in words})


TOP_LOGPROBS = 5


class BackendJudge:
    """Judges through a backend's normal request path: one greedy token and its top logprobs. A server that
    refuses or omits logprobs is asked for the bare word, which counts as 0 for "yes" (the weakest yes
    there is) and -inf otherwise."""

    def __init__(self, backend: Backend, model: str):
        self.backend = backend
        self.model = model
        self._logprobs = True

    async def log_odds(self, cached_prompt: str, prompt: str) -> float:
        params: dict[str, Any] = {"max_tokens": 1, "temperature": 0}
        if self._logprobs:
            params |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        request = BackendRequest(kind="chat", model=self.model, messages=judge_messages(cached_prompt, prompt),
                                 params=params)
        try:
            events = [event async for event in self.backend.stream(request)]
        except BackendError as exc:
            if not self._logprobs or exc.status != 400:
                raise
            log.warning("the judge's backend refused logprobs (%s); judging by the bare word", exc)
            self._logprobs = False
            return await self.log_odds(cached_prompt, prompt)
        top = [entry for event in events if event.extra and (lp := event.extra.get("logprobs"))
               for entry in (lp.get("content") or [])[:1]]
        if top and (alternatives := top[0].get("top_logprobs")):
            return log_odds_from_top(alternatives)
        text = "".join(event.text for event in events)
        return 0.0 if text.strip().lower().startswith("yes") else -math.inf

    async def warm(self) -> None:
        """Nothing to do: the server keeps its own prefix cache, if any."""


def log_odds_from_top(alternatives: list[dict[str, Any]]) -> float:
    """log P(yes) − log P(no) from a server's top logprobs. A word missing from them is bounded by the least
    likely one listed, on the cautious side: a missing "no" gives a lower bound, a missing "yes" refuses."""
    def mass(word: str) -> float | None:
        found = [entry["logprob"] for entry in alternatives if entry["token"].strip().lower() == word]
        return math.log(sum(math.exp(lp) for lp in found)) if found else None

    yes, no = mass("yes"), mass("no")
    if yes is None:
        return -math.inf
    return yes - (no if no is not None else min(entry["logprob"] for entry in alternatives))


class TierJudge:
    """The judge of a tier: each verdict goes to the replica the balancer would pick now (an embedded engine
    is asked in-process, anything else through its API). A replica still loading refuses (a miss, never a
    wrong hit)."""

    def __init__(self, pick: Callable[[], Replica | None]):
        self.pick = pick
        self._judges: dict[int, Judge] = {}

    async def log_odds(self, cached_prompt: str, prompt: str) -> float:
        replica = self.pick()
        if replica is None or (judge := self._judge_of(replica)) is None:
            return -math.inf
        with replica.lease():  # the balancer counts a verdict as load
            return await judge.log_odds(cached_prompt, prompt)

    async def warm(self) -> None:
        replica = self.pick()
        if replica is not None and (judge := self._judge_of(replica)) is not None:
            await judge.warm()

    def _judge_of(self, replica: Replica) -> Judge | None:
        backend = replica.backend
        if (judge := self._judges.get(id(backend))) is None:
            engine: Any = getattr(backend, "engine", None)
            if engine is None and hasattr(backend, "engine"):
                return None  # an embedded engine still loading
            judge = EngineJudge(engine.loaded) if engine else BackendJudge(backend, replica.model)
            self._judges[id(backend)] = judge
        return judge
