"""Automatic prefix caching: later prompts reuse earlier KV within their scope, and answer exactly the same."""

from __future__ import annotations

import asyncio

import pytest
import torch

from drafters.model import ModelDrafter
from engine.engine import Engine
from engine.loader import load_model
from engine.prefix_cache import PrefixCache
from engine.store import resolve
from engine.types import SamplingParams

MODEL = "smollm2-135m-instruct"
GREEDY = SamplingParams(max_tokens=24, temperature=0.0)
SYSTEM = {"role": "system", "content": "You are a terse assistant for a hardware store. Answer in one sentence."}


@pytest.fixture(scope="module")
def loaded():
    return load_model(MODEL, resolve(MODEL, progress=False), pack=True)


@pytest.fixture
def cached(loaded):
    engine = Engine(loaded, max_batch_size=4)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def uncached(loaded):
    engine = Engine(loaded, max_batch_size=4, prefix_cache_mb=0)
    yield engine
    engine.close()


async def chat(engine: Engine, messages, scope: str = "", params: SamplingParams = GREEDY):
    """(answer token ids, answer text, prompt tokens taken from the prefix cache)."""
    deltas = [d async for d in engine.generate(engine.encode_chat(messages), params, cache_scope=scope)]
    usage = deltas[-1].usage
    assert usage is not None
    return [t for d in deltas for t in d.token_ids], "".join(d.text for d in deltas), usage.cached_tokens


def second_turn(first_answer: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": "Do you sell hammers?"},
            {"role": "assistant", "content": first_answer}, {"role": "user", "content": "And nails?"}]


async def test_a_chats_next_turn_reuses_the_conversation_so_far_and_answers_the_same(cached, uncached):
    first = [SYSTEM, {"role": "user", "content": "Do you sell hammers?"}]
    _, answer, reused = await chat(cached, first)
    assert reused == 0
    messages = second_turn(answer)
    tokens, _, reused = await chat(cached, messages)
    expected, _, none = await chat(uncached, messages)
    assert tokens == expected and none == 0
    # the whole first turn, prompt and answer, was prefilled or generated before
    assert reused >= len(cached.encode_chat(first))
    assert cached.prefix_cache is not None and cached.prefix_cache.hit_tokens == reused


async def test_the_same_prompt_again_prefills_only_its_last_token(cached, uncached):
    messages = [SYSTEM, {"role": "user", "content": "What is a wrench for?"}]
    first, _, _ = await chat(cached, messages)
    again, _, reused = await chat(cached, messages)
    assert reused == len(cached.encode_chat(messages)) - 1
    assert first == again == (await chat(uncached, messages))[0]


async def test_kv_is_reused_only_within_its_scope(cached):
    messages = [SYSTEM, {"role": "user", "content": "Where are the screws?"}]
    await chat(cached, messages, scope="tenant-a")
    assert (await chat(cached, messages, scope="tenant-b"))[2] == 0
    assert (await chat(cached, messages, scope="tenant-a"))[2] > 0


async def test_concurrent_requests_sharing_a_system_prompt_answer_as_without_the_cache(cached, uncached):
    questions = ["Do you cut keys?", "Do you rent ladders?", "Is there parking?", "Do you sell paint?"]
    conversations = [[SYSTEM, {"role": "user", "content": q}] for q in questions]
    await chat(cached, conversations[0])  # the system prompt is now stored
    together = await asyncio.gather(*(chat(cached, m) for m in conversations[1:]))
    alone = [await chat(uncached, m) for m in conversations[1:]]
    assert [tokens for tokens, _, _ in together] == [tokens for tokens, _, _ in alone]
    assert all(reused > 0 for _, _, reused in together)


async def test_the_draft_model_reuses_its_own_prompt_kv_and_the_output_is_unchanged(loaded, uncached):
    draft = load_model(MODEL, resolve(MODEL, progress=False))
    drafter = ModelDrafter(draft, target=loaded.model, int8=True, prefix_cache=PrefixCache(2**26))
    engine = Engine(loaded, max_batch_size=4)
    engine.scheduler.drafter = drafter
    messages = [SYSTEM, {"role": "user", "content": "Do you sell glue?"}]
    try:
        first, _, _ = await chat(engine, messages)
        again, _, _ = await chat(engine, messages)
    finally:
        engine.close()
    assert first == again == (await chat(uncached, messages))[0]
    assert drafter.prefix_cache is not None and drafter.prefix_cache.hit_tokens > 0


def kv(tokens: int, fill: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two layers of fake KV, one float per position and head dim, so a test can count bytes."""
    return [(torch.full((1, 1, tokens, 4), fill), torch.full((1, 1, tokens, 4), fill)) for _ in range(2)]


def test_matches_stop_one_token_short_and_ignore_short_prefixes():
    cache = PrefixCache(2**20, min_tokens=4)
    cache.store("", list(range(10)), kv(10))
    assert cache.match("", list(range(10))).tokens == 9
    assert cache.match("", [*range(6), 99]).tokens == 6
    assert cache.match("", [0, 1, 2, 99]).tokens == 0  # 3 shared tokens: below min_tokens
    match = cache.match("", [*range(12)])
    assert match.tokens == 10 and match.layers[0][0].shape == (1, 1, 10, 4)


def test_longer_entries_replace_their_prefixes_and_the_least_recently_used_go_first():
    per_token = 2 * 2 * 4 * 4  # layers × (keys, values) × dim × float32
    cache = PrefixCache(24 * per_token, min_tokens=2)
    cache.store("", list(range(10)), kv(10))
    cache.store("", list(range(15)), kv(15))  # extends the first: replaces it
    assert cache.entries == 1 and cache.nbytes == 15 * per_token
    cache.store("", list(range(12)), kv(12))  # already covered by the stored one: nothing new
    assert cache.entries == 1
    cache.store("", [50, 51, *range(8)], kv(10))  # over budget: the least recently used goes
    assert cache.entries == 1 and cache.match("", list(range(15))).tokens == 0
    assert cache.match("", [50, 51, 0, 1, 7]).tokens == 4
    cache.store("", list(range(100)), kv(100))  # larger than the whole budget: not stored
    assert cache.nbytes <= 24 * per_token
    cache.store("", [60, 61, 62], kv(2))  # fewer positions than tokens (a sliding window): not stored
    assert cache.match("", [60, 61, 62, 63]).tokens == 0
