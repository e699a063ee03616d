"""The semantic-hit judge: prefix-cached scoring equals a full forward; the cache obeys the judge's verdict
(refusal, error, late verdict → miss); the gateway asks the configured tier's model."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable

import numpy as np
import openai
import pytest
import redis_proc
import torch
from conftest import TurnoutProcess, UvicornServer, wait_until_ready
from scrape import scrape, total
from test_cache import TENANT, answer, chat, embed, make_cache, store_embedded

from engine.loader import LoadedModel, load_model
from engine.prefix_scorer import PrefixScorer
from engine.store import resolve
from gateway.api import create_app
from gateway.backends.base import BackendError
from gateway.cache.matching.judge import BackendJudge, EngineJudge, TierJudge, judge_messages, log_odds_from_top
from gateway.cache.redis_server import RedisServerProcess
from gateway.config import ConfigError, parse_config
from gateway.types import BackendRequest, StreamEvent

redis_server = redis_proc.redis_server
__all__ = ["embed"]  # a fixture of test_cache, shared


@pytest.fixture(scope="module")
def loaded(tiny_model: str) -> LoadedModel:
    return load_model(tiny_model, resolve(tiny_model, progress=False), pack=True)


@torch.inference_mode()
def full_forward_logprobs(loaded: LoadedModel, ids: list[int]) -> torch.Tensor:
    logits = loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return torch.log_softmax(logits, dim=-1)


def test_prefix_scorer_equals_a_full_forward_call_after_call(loaded: LoadedModel) -> None:
    prefix = loaded.tokenizer.encode("Answer with yes or no. Is the sky blue?")
    scorer = PrefixScorer(loaded, prefix)
    assert scorer.warm().get_seq_length() == len(prefix)
    for suffix in (" Yes, and is grass green?", " Is snow black?", " Yes"):  # each call starts from the prefix
        ids = prefix + loaded.tokenizer.encode(suffix)
        torch.testing.assert_close(scorer.next_token_logprobs(ids), full_forward_logprobs(loaded, ids),
                                   atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError):
        scorer.next_token_logprobs(loaded.tokenizer.encode("Something else entirely"))
    with pytest.raises(ValueError):
        scorer.next_token_logprobs(prefix)


def test_engine_judge_scores_the_whole_judge_prompt(loaded: LoadedModel) -> None:
    judge = EngineJudge(loaded)
    cached, new = "How do I reverse a list in Python?", "How can I reverse a Python list?"
    text = loaded.tokenizer.apply_chat_template(judge_messages(cached, new), add_generation_prompt=True,
                                                tokenize=False)
    logprobs = full_forward_logprobs(loaded, loaded.tokenizer.encode(text, add_special_tokens=False))
    yes = logprobs[judge._yes].logsumexp(0) - logprobs[judge._no].logsumexp(0)
    assert asyncio.run(judge.log_odds(cached, new)) == pytest.approx(float(yes), abs=1e-3)


async def test_concurrent_verdicts_while_the_loop_tokenises(loaded: LoadedModel) -> None:
    """Verdicts run their forward passes in worker threads while the event loop keeps tokenising (as the
    engine does for every request): every verdict arrives, none trips over the shared tokenizer."""
    judge = EngineJudge(loaded)

    async def tokenise_meanwhile() -> bool:
        for _ in range(100):
            loaded.tokenizer.encode("How do I sort a list of dictionaries by a key? " * 4)
            await asyncio.sleep(0)
        return True

    *verdicts, tokenised = await asyncio.gather(
        *(judge.log_odds(f"How do I sort {n} files by date?", f"How can I order {n} files by date?")
          for n in range(8)), tokenise_meanwhile())
    assert tokenised and all(math.isfinite(verdict) for verdict in verdicts)


async def test_backend_judge_reads_the_servers_logprobs(engine_server: TurnoutProcess, tiny_model: str,
                                                        loaded: LoadedModel) -> None:
    """Through the engine's own server (top_logprobs over HTTP) the verdict is the in-process judge's,
    up to the words the top 5 leave out, which only ever lower it."""
    from gateway.backends import build_backend
    from gateway.config import DeploymentConfig

    backend = build_backend(DeploymentConfig(kind="openai", model=tiny_model, url=engine_server.base_url))
    await backend.start()
    judge = BackendJudge(backend, tiny_model)
    try:
        remote = await judge.log_odds("What is 2+2?", "What's two plus two?")
    finally:
        await backend.close()
    local = await EngineJudge(loaded).log_odds("What is 2+2?", "What's two plus two?")
    assert judge._logprobs and math.isfinite(remote)
    assert remote <= local + 1e-3


class RefusesLogprobs:
    """A backend like a server without logprobs: 400 when asked for them, else one greedy "yes"."""

    def __init__(self) -> None:
        self.requests: list[BackendRequest] = []

    async def stream(self, request: BackendRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        if request.params.get("logprobs"):
            raise BackendError("'logprobs' is not supported", 400, param="logprobs")
        yield StreamEvent(text="Yes", finish_reason="length")


async def test_backend_judge_falls_back_to_the_bare_word() -> None:
    """A server that refuses logprobs is asked for the bare word from then on; "yes" counts as the weakest
    yes there is (0)."""
    backend = RefusesLogprobs()
    judge = BackendJudge(backend, "m")  # type: ignore[arg-type]
    verdicts = [await judge.log_odds("What is 2+2?", "What's two plus two?") for _ in range(2)]
    assert verdicts == [0.0, 0.0]
    assert [bool(r.params.get("logprobs")) for r in backend.requests] == [True, False, False]


def test_log_odds_from_a_servers_top_logprobs() -> None:
    top = [{"token": "Yes", "logprob": -0.2}, {"token": " yes", "logprob": -3.0}, {"token": "No", "logprob": -2.5},
           {"token": "Maybe", "logprob": -6.0}]
    assert log_odds_from_top(top) == pytest.approx(math.log(math.exp(-0.2) + math.exp(-3.0)) + 2.5)
    assert log_odds_from_top(top[:2] + top[3:]) == pytest.approx(math.log(math.exp(-0.2) + math.exp(-3.0)) + 6.0)
    assert log_odds_from_top(top[2:]) == -math.inf  # no "yes" among the top: a refusal


async def test_a_tier_with_no_replica_to_ask_refuses() -> None:
    assert await TierJudge(lambda: None).log_odds("What is 2+2?", "What's two plus two?") == -math.inf


class FixedJudge:
    """A policy stand-in: fixed log-odds, an error, or a verdict that comes too late."""

    def __init__(self, log_odds: float = 0.0, *, error: bool = False, delay_s: float = 0.0):
        self.verdict, self.error, self.delay_s = log_odds, error, delay_s
        self.calls: list[tuple[str, str]] = []

    async def log_odds(self, cached_prompt: str, prompt: str) -> float:
        self.calls.append((cached_prompt, prompt))
        await asyncio.sleep(self.delay_s)
        if self.error:
            raise RuntimeError("judge down")
        return self.verdict

    async def warm(self) -> None:
        pass


@pytest.mark.parametrize(("judge", "status", "stat"), [
    (FixedJudge(5.0), "semantic-hit", None),
    (FixedJudge(-5.0), "miss", "vetoed:judge"),
    (FixedJudge(error=True), "miss", "judge:error"),
    (FixedJudge(5.0, delay_s=5.0), "miss", "judge:error"),
])
async def test_the_cache_serves_a_semantic_hit_only_on_the_judges_yes(
    redis_server: RedisServerProcess, embed: Callable[[str], np.ndarray], judge: FixedJudge, status: str,
    stat: str | None,
) -> None:
    cache = make_cache(redis_server, judge_timeout_s=0.5)
    cache.judge = judge
    await store_embedded(cache, embed, chat("How do I reverse a list in Python?"), "Use reversed().")
    paraphrase = chat("How can I reverse a Python list?")
    lookup = await cache.lookup(TENANT, paraphrase, embed(paraphrase.prompt_text()))
    await cache.close()
    assert lookup.status == status
    assert judge.calls == [("How do I reverse a list in Python?", "How can I reverse a Python list?")]
    if stat:
        assert cache.stats[stat] == 1 and lookup.reason == "vetoed:judge"


@pytest.mark.parametrize(("judge_log_odds", "second"), [(3.0, "semantic-hit"), (0.5, "miss")])
async def test_with_a_judge_the_verifier_passes_more_to_it(
    redis_server: RedisServerProcess, embed: Callable[[str], np.ndarray], judge_log_odds: float, second: str,
) -> None:
    """A paraphrase the verifier alone doubts (P ~0.46 < 0.55) reaches the judge (verifier_min_probability_judged),
    and the verifier's doubt still counts there: a confident judge (3) clears the bar of 0.5, a lukewarm one
    (0.5, minus half the verifier's log-odds) does not."""
    stored = chat("How do I select the top 10 rows in SQL?")
    reworded = chat("What's the SQL to fetch only the first 10 rows?")
    statuses = []
    for judge in (None, FixedJudge(judge_log_odds)):
        cache = make_cache(redis_server)
        cache.judge = judge
        await store_embedded(cache, embed, stored, "SELECT ... LIMIT 10")
        statuses.append((await cache.lookup(TENANT, reworded, embed(reworded.prompt_text()))).status)
        await cache.close()
    assert statuses == ["miss", second]


async def test_the_judge_sees_the_candidate_the_verifier_likes_best(
    redis_server: RedisServerProcess, embed: Callable[[str], np.ndarray]
) -> None:
    """One judge call per lookup goes to the likeliest paraphrase, not to the nearest vector: "… in place?"
    is nearer (cosine 0.984 against 0.979) but the verifier doubts it (P ~0.2 against ~0.98)."""
    cache = make_cache(redis_server)
    cache.judge = judge = FixedJudge(5.0)
    await store_embedded(cache, embed, chat("How can I reverse a Python list in place?"), "list.reverse()")
    await store_embedded(cache, embed, chat("How do I reverse a list in Python?"), "reversed() or [::-1]")
    query = chat("How can I reverse a Python list?")
    lookup = await cache.lookup(TENANT, query, embed(query.prompt_text()))
    await cache.close()
    assert judge.calls == [("How do I reverse a list in Python?", "How can I reverse a Python list?")]
    assert lookup.status == "semantic-hit" and lookup.events == answer("reversed() or [::-1]")


class OneWayJudge(FixedJudge):
    """Accepts the cached request first and the new one second, refuses the other order: how a judge
    treats an added condition ("… in place?" answered for "…?" but not the other way round)."""

    async def log_odds(self, cached_prompt: str, prompt: str) -> float:
        self.calls.append((cached_prompt, prompt))
        return 5.0 if cached_prompt.startswith("How do I") else -5.0


@pytest.mark.parametrize(("both_ways", "status", "calls"), [(False, "semantic-hit", 1), (True, "miss", 2)])
async def test_judged_both_ways_a_one_sided_yes_is_a_miss(
    redis_server: RedisServerProcess, embed: Callable[[str], np.ndarray], both_ways: bool, status: str, calls: int,
) -> None:
    cache = make_cache(redis_server, judge_both_ways=both_ways)
    cache.judge = judge = OneWayJudge()
    await store_embedded(cache, embed, chat("How do I reverse a list in Python?"), "reversed()")
    query = chat("How can I reverse a Python list?")
    lookup = await cache.lookup(TENANT, query, embed(query.prompt_text()))
    await cache.close()
    assert lookup.status == status and len(judge.calls) == calls
    assert judge.calls[1:] == [("How can I reverse a Python list?", "How do I reverse a list in Python?")][: calls - 1]


async def test_the_exact_cache_never_asks_the_judge(redis_server: RedisServerProcess) -> None:
    cache = make_cache(redis_server)
    cache.judge = judge = FixedJudge(-5.0)
    request = chat("What is a monad?")
    assert await cache.store(TENANT, request, None, answer("A monoid."))
    assert (await cache.lookup(TENANT, request)).status == "hit"
    await cache.close()
    assert judge.calls == []


def judged_gateway_config(tiny_model: str, engine_server: TurnoutProcess, min_log_odds: float) -> str:
    return f"""
tiers:
  small:
    deployments: [{{kind: openai, model: {tiny_model}, url: "{engine_server.base_url}"}}]
  large:
    deployments: [{{kind: embedded, model: {tiny_model}, max_batch_size: 2}}]
routing: {{router: none}}
cache: {{judge_tier: large, judge_min_log_odds: {min_log_odds}}}
"""


@pytest.mark.slow
@pytest.mark.parametrize(("min_log_odds", "second"), [(-1e9, "semantic-hit"), (1e9, "miss")])
def test_the_gateway_asks_the_large_tiers_model(tiny_model: str, engine_server: TurnoutProcess,
                                                min_log_odds: float, second: str) -> None:
    """Whatever the tiny model thinks, a bar below every verdict accepts and one above refuses."""
    config = parse_config(judged_gateway_config(tiny_model, engine_server, min_log_odds))
    with UvicornServer(create_app(config)) as server:
        wait_until_ready(server.url)
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-judge", max_retries=0)
        headers = []
        for question in ("What is the capital city of France?", "What's the capital city of France?"):
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": question}], max_tokens=4, temperature=0)
            headers.append(raw.headers["x-turnout-cache"])
        refused = total(scrape(server.url), "turnout_cache_semantic_vetoes_total", reason="judge")
    assert headers == ["miss", second]
    assert refused == (1 if second == "miss" else 0)


def test_a_judge_tier_must_exist_when_named(tiny_model: str) -> None:
    small_only = f"tiers: {{small: {{deployments: [{{kind: embedded, model: {tiny_model}}}]}}}}\n"
    assert parse_config(small_only + "cache: {}\n").cache.judge_tier == "large"  # the default: no large tier, no judge
    with pytest.raises(ConfigError, match="judge_tier"):
        parse_config(small_only + "cache: {judge_tier: large}\n")
