"""A language model's last word on a semantic hit: would the cached answer to one request answer the other?

Why: the guards and the learned verifier compare words, and the false hits they let through are the
ones only meaning separates — a swapped object (rice on the stove / in a microwave), an added condition
(a birdhouse / a birdhouse for bluebirds), a comparative (stronger / weaker coffee). An instruct model
asked "same answer for both?" with a few worked examples separates these well (bench/cache/RESULTS.md),
and it runs only on candidates every cheaper check accepted, i.e. on would-be hits, each of which saves a
whole generation.

Two ways to ask, one question (`judge_messages`):
- `EngineJudge`: an in-process model; the instructions and examples are prefilled once
  (engine.prefix_scorer), so a call prefills only the two requests; it accepts when P(yes) > P(no) by
  `min_log_odds`.
- `BackendJudge`: any backend (vLLM, an OpenAI-compatible server): one greedy token, accepted if it is
  "yes". Servers with prefix caching (vLLM) reuse the examples' KV cache themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from engine.loader import LoadedModel
from engine.prefix_scorer import PrefixScorer
from gateway.backends.base import Backend
from gateway.types import BackendRequest

if TYPE_CHECKING:
    from gateway.balancer import Replica

log = logging.getLogger("turnout.cache.judge")

INSTRUCTIONS = (
    "You check a chatbot's answer cache. A cached answer to Request 1 may be reused for Request 2 only if "
    "both ask for exactly the same thing, so that the same answer is complete and correct for both. "
    "Rewording does not matter. A different object, tool, place, amount, direction or condition, or an "
    "added or removed detail, does matter. Reply with yes or no."
)
# Worked examples, written for this prompt (none is in a labelled pair set of bench/cache).
EXAMPLES = (
    ("How do I boil an egg?", "What's the way to hard-boil eggs?", "yes"),
    ("How do I convert a list to a string in Python?", "How do I convert a list to a set in Python?", "no"),
    ("Which city is the capital of Australia?", "What is Australia's capital city?", "yes"),
    ("How do I unclog a sink?", "How do I unclog a kitchen sink without chemicals?", "no"),
    ("How can I learn Spanish quickly?", "Best way to learn Spanish fast?", "yes"),
    ("How do I increase the font size in VS Code?", "How do I decrease the font size in VS Code?", "no"),
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
    async def accepts(self, cached_prompt: str, prompt: str) -> bool:
        """Whether the answer cached for `cached_prompt` may be served for `prompt`."""
        ...

    async def warm(self) -> None:
        """Do the one-off work now (an in-process judge prefills its examples: ~10 s for a 1.5B on CPU)."""
        ...


class EngineJudge:
    """Judges with an in-process model (blocking work runs in a worker thread)."""

    def __init__(self, loaded: LoadedModel, min_log_odds: float = 0.0):
        self.tokenizer = loaded.tokenizer
        self.min_log_odds = min_log_odds
        self._scorer = PrefixScorer(loaded, self._encode(judge_messages("", "")[:-1], generation_prompt=False))
        self._yes = self._first_tokens("yes", "Yes")
        self._no = self._first_tokens("no", "No")

    def log_odds(self, cached_prompt: str, prompt: str) -> float:
        """log P(yes) − log P(no) for the judge's next token (blocking)."""
        return self._log_odds(self._encode(judge_messages(cached_prompt, prompt)))

    async def accepts(self, cached_prompt: str, prompt: str) -> bool:
        # Tokenise here, on the event loop like the engine's other callers: a fast tokenizer used from two
        # threads at once can fail with "Already borrowed" (huggingface/tokenizers#537). Only the forward
        # pass goes to a worker thread.
        ids = self._encode(judge_messages(cached_prompt, prompt))
        return await asyncio.to_thread(self._log_odds, ids) > self.min_log_odds

    def _log_odds(self, ids: list[int]) -> float:
        logprobs = self._scorer.next_token_logprobs(ids)
        return float(logprobs[self._yes].logsumexp(0) - logprobs[self._no].logsumexp(0))

    async def warm(self) -> None:
        await asyncio.to_thread(self._scorer.warm)

    def _encode(self, messages: list[dict[str, str]], *, generation_prompt: bool = True) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _first_tokens(self, *words: str) -> list[int]:
        return sorted({self.tokenizer.encode(word, add_special_tokens=False)[0] for word in words})


class BackendJudge:
    """Judges through a backend's normal request path: one greedy token."""

    def __init__(self, backend: Backend, model: str):
        self.backend = backend
        self.model = model

    async def accepts(self, cached_prompt: str, prompt: str) -> bool:
        request = BackendRequest(kind="chat", model=self.model, messages=judge_messages(cached_prompt, prompt),
                                 params={"max_tokens": 1, "temperature": 0})
        text = "".join([event.text async for event in self.backend.stream(request) if event.text])
        return text.strip().lower().startswith("yes")

    async def warm(self) -> None:
        """Nothing to do: the server keeps its own prefix cache, if any."""


class TierJudge:
    """The judge of a tier: each verdict goes to the replica the balancer would pick now (an embedded engine
    is asked in-process, anything else through its API). A replica still loading refuses (a miss, never a
    wrong hit)."""

    def __init__(self, pick: Callable[[], Replica | None], min_log_odds: float = 0.0):
        self.pick = pick
        self.min_log_odds = min_log_odds
        self._judges: dict[int, Judge] = {}

    async def accepts(self, cached_prompt: str, prompt: str) -> bool:
        replica = self.pick()
        if replica is None or (judge := self._judge_of(replica)) is None:
            return False
        with replica.lease():  # the balancer counts a verdict as load
            return await judge.accepts(cached_prompt, prompt)

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
            judge = EngineJudge(engine.loaded, self.min_log_odds) if engine else BackendJudge(backend, replica.model)
            self._judges[id(backend)] = judge
        return judge
