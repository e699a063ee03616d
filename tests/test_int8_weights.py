"""The engine's int8 weight format: the layers, the store's one-time conversion, and the engine on it
(SmolLM2-135M, converted from the real pulled model)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import torch
from conftest import running_gateway
from safetensors.torch import load_file
from test_speculative import PROMPTS  # prompts that n-gram drafting finds copies in, and two that it does not
from torch import nn

from drafters.ngram import NgramDrafter
from engine import quantized, store
from engine.engine import Engine
from engine.gguf_embedding import GgufEmbedding
from engine.int8_linear import Int8Embedding, Int8Linear
from engine.loader import load_model
from engine.speculative import SpeculativeConfig
from engine.types import Delta, SamplingParams

MODEL = "smollm2-135m-instruct"
GREEDY = SamplingParams(max_tokens=32, temperature=0.0)


@pytest.fixture(scope="module")
def int8_dir() -> Path:
    return Path(store.resolve(MODEL, progress=False, weights="int8"))


@pytest.fixture(scope="module")
def int8_engine(int8_dir: Path):
    # no prefix cache: a prompt prefilled after a cached prefix is near, not bitwise, the whole prefill
    # (engine/stepwise_attention.py), and transformers' generate below prefills whole prompts
    engine = Engine.load(MODEL, weights="int8", max_batch_size=4, progress=False, prefix_cache_mb=0)
    yield engine
    engine.close()


async def generate(engine: Engine, prompt: str) -> list[Delta]:
    ids = engine.encode_chat([{"role": "user", "content": prompt}])
    return [delta async for delta in engine.generate(ids, GREEDY)]


async def tokens(engine: Engine, prompt: str) -> list[int]:
    return [token for delta in await generate(engine, prompt) for token in delta.token_ids]


def test_int8_linear_is_close_to_the_float_layer() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(256, 320)
    x = torch.randn(3, 5, 256)
    out = Int8Linear.from_linear(linear)(x)
    assert out.shape == (3, 5, 320)
    expected = linear(x)
    assert (out - expected).norm() / expected.norm() < 0.02


def test_int8_rows_are_batch_invariant() -> None:
    """A row's result must not depend on the rows beside it, whatever their magnitudes: each row is
    quantized with its own scale and the products accumulate exactly in int32."""
    torch.manual_seed(1)
    layer = Int8Linear.from_linear(nn.Linear(128, 512))
    x = torch.randn(16, 128) * torch.logspace(-2, 2, 16)[:, None]
    full = layer(x)
    for rows in range(1, 17):
        assert torch.equal(layer(x[:rows]), full[:rows])
        assert torch.equal(layer(x[rows - 1 : rows]), full[rows - 1 : rows])


def test_int8_embedding_dequantizes_only_the_rows_it_reads() -> None:
    torch.manual_seed(2)
    table = nn.Embedding(50, 64)
    weight_int8, scale = quantized.quantize_weight(table.weight)
    embedding = Int8Embedding(weight_int8, scale)
    ids = torch.tensor([[3, 7, 7], [49, 0, 1]])
    assert torch.allclose(embedding(ids), table(ids), atol=float(scale.max()))


def test_conversion_is_stored_once_and_listed_with_its_format(int8_dir: Path) -> None:
    manifest = store.read_manifest(int8_dir)
    assert manifest is not None and manifest["weights"] == "int8" and manifest["smoothquant"]
    stamp = (int8_dir / store.MANIFEST).stat().st_mtime_ns
    assert store.resolve(MODEL, progress=False, weights="int8") == str(int8_dir)
    assert (int8_dir / store.MANIFEST).stat().st_mtime_ns == stamp  # not converted again
    listing = subprocess.run([sys.executable, "-m", "gateway.cli", "models", "list"], check=True,
                             capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"}).stdout
    row = next(line for line in listing.splitlines() if int8_dir.name in line)
    assert "int8" in [cell.strip() for cell in row.split("│")]
    infos = {info.name: info for info in store.list_models()}
    fp32, int8 = infos[MODEL], infos[int8_dir.name]
    assert fp32.weights == "fp32" and int8.weights == "int8"
    assert int8.memory is not None and fp32.memory is not None and int8.memory < fp32.memory / 3


def test_interrupted_conversion_leaves_nothing_that_looks_complete(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, int8_dir: Path) -> None:
    source = store.resolve(MODEL, progress=False)  # a dir outside the home below: keyed by its path
    monkeypatch.setenv("TURNOUT_HOME", str(tmp_path / "home"))

    def interrupted(location: str, out_dir: Path, **_: object) -> dict[str, object]:
        (out_dir / quantized.WEIGHTS_FILE).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(quantized, "convert_int8", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.convert_weights(source, "int8", progress=False)
    models = tmp_path / "home" / "models"
    assert [p.name for p in models.iterdir() if not p.name.startswith(".lock-")] == []
    with pytest.raises(store.StoreError, match="no int8 conversion yet"):
        store.convert_weights(source, "int8", pull=False)
    with pytest.raises(store.StoreError, match="unknown weight format 'int4'"):
        store.convert_weights(source, "int4")
    with pytest.raises(store.StoreError, match="nothing to convert"):
        store.convert_weights(source, "fp32")


async def test_engine_greedy_equals_transformers_generate_on_the_same_int8_weights(
        int8_engine: Engine, int8_dir: Path) -> None:
    reference_model = quantized.load_int8(str(int8_dir))  # a second, independent load
    for prompt in PROMPTS[2:]:
        ids = int8_engine.encode_chat([{"role": "user", "content": prompt}])
        ours = await tokens(int8_engine, prompt)
        with torch.inference_mode():
            reference = reference_model.generate(torch.tensor([ids]), max_new_tokens=GREEDY.max_tokens,
                                                 do_sample=False)[0, len(ids):].tolist()
        assert ours == reference[: len(ours)]
        assert len(reference) == len(ours) or reference[len(ours)] in int8_engine.loaded.eos_token_ids


async def test_int8_batched_equals_unbatched(int8_engine: Engine) -> None:
    alone = [await tokens(int8_engine, prompt) for prompt in PROMPTS]
    together = await asyncio.gather(*(tokens(int8_engine, prompt) for prompt in PROMPTS))
    assert list(together) == alone


async def test_int8_speculation_keeps_the_output(int8_engine: Engine) -> None:
    plain = [await tokens(int8_engine, prompt) for prompt in PROMPTS]
    speculating = Engine(int8_engine.loaded, max_batch_size=4, speculative=SpeculativeConfig(method="ngram"),
                         drafters=lambda config, target, **_: NgramDrafter(), prefix_cache_mb=0)
    try:
        drafted = [await generate(speculating, prompt) for prompt in PROMPTS]
        together = await asyncio.gather(*(tokens(speculating, prompt) for prompt in PROMPTS))
    finally:
        speculating.close()
    assert [[token for delta in deltas for token in delta.token_ids] for deltas in drafted] == plain
    assert list(together) == plain
    assert sum(deltas[-1].spec.num_draft_tokens for deltas in drafted if deltas[-1].spec) > 0


def test_int8_weights_run_on_the_cpu_only(int8_dir: Path) -> None:
    with pytest.raises(ValueError, match="int8 weights run on the CPU"):
        load_model(MODEL, str(int8_dir), device="meta")


def test_the_conversion_records_what_it_did(int8_dir: Path) -> None:
    facts = json.loads((int8_dir / quantized.FORMAT_FILE).read_text())
    assert facts["weights"] == "int8" and facts["quantized_layers"] > 0


def test_a_model_from_a_gguf_keeps_the_gguf_embedding_blocks_exactly(int8_dir: Path) -> None:
    """SmolLM2's GGUF stores its (tied) embedding as Q8_0: the int8 model looks rows up in those very
    blocks, so its embedding is bitwise the float model's, and the head has int8 rows of its own."""
    facts = json.loads((int8_dir / quantized.FORMAT_FILE).read_text())
    assert facts["embedding"] == "Q8_0" and facts["tied_head"]
    model = load_model(MODEL, str(int8_dir)).model
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, GgufEmbedding) and isinstance(model.get_output_embeddings(), Int8Linear)
    float_embedding = load_model(MODEL, store.resolve(MODEL, progress=False)).model.get_input_embeddings()
    ids = torch.tensor([[0, 1, 2, 500], [49151, 7, 7, 30000]])
    assert torch.equal(embedding(ids), float_embedding(ids))


def test_a_model_without_a_gguf_keeps_int8_embedding_rows_shared_with_a_tied_head(tmp_path: Path) -> None:
    source = store.resolve(MODEL, progress=False)
    facts = quantized.convert_int8(source, tmp_path)  # no GGUF given: a model dir or hub repo
    assert facts["embedding"] == "int8" and facts["tied_head"]
    model = quantized.load_int8(str(tmp_path))
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert isinstance(embedding, Int8Embedding) and isinstance(head, Int8Linear)
    stored = load_file(tmp_path / quantized.WEIGHTS_FILE)
    assert not [name for name in stored if name.startswith("lm_head")]  # the head is the embedding's rows
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        assert model(ids).logits.shape == (1, 3, model.config.vocab_size)


@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_a_verify_step_gives_each_position_the_logits_of_one_token_steps(weights: str) -> None:
    """What speculative == plain decoding rests on, bitwise (engine/stepwise_attention.py)."""
    from transformers import DynamicCache

    from engine.kv import crop_cache

    loaded = load_model(MODEL, store.resolve(MODEL, progress=False, weights=weights), pack=True)
    ids = loaded.tokenizer.encode("The quick brown fox jumps over the lazy dog because it is")
    prompt, fed = ids[:-5], ids[-5:]
    cache = DynamicCache(config=loaded.model.config)
    with torch.inference_mode():
        loaded.model(input_ids=torch.tensor([prompt]), past_key_values=cache, use_cache=True)
        together = loaded.model(input_ids=torch.tensor([fed]), past_key_values=cache, use_cache=True).logits[0]
        crop_cache(cache, len(prompt))
        alone = torch.cat([loaded.model(input_ids=torch.tensor([[token]]), past_key_values=cache,
                                        use_cache=True).logits[0] for token in fed])
    assert torch.equal(together, alone)


def test_the_format_is_chosen_per_embedded_deployment() -> None:
    from gateway.config import ConfigError, parse_config

    config = parse_config(f"tiers: {{small: {{deployments: [{{model: {MODEL}, weights: int8}}]}}}}")
    assert config.tiers["small"].deployments[0].weights == "int8"
    with pytest.raises(ConfigError, match="weights"):
        parse_config(f"tiers: {{small: {{deployments: [{{model: {MODEL}, weights: int4}}]}}}}")
    with pytest.raises(ConfigError, match="a openai server loads its own weights"):
        parse_config("tiers: {small: {deployments: [{kind: openai, model: m, url: 'http://h/v1', weights: int8}]}}")


def test_a_gateway_serves_int8_weights_through_the_sdk(int8_dir: Path) -> None:
    with running_gateway(f"""
tiers: {{small: {{deployments: [{{kind: embedded, model: {MODEL}, weights: int8}}]}}}}
routing: {{router: none}}

""") as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="test")
        reply = client.chat.completions.with_raw_response.create(
            model="auto", max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Say hi."}])
        assert reply.parse().choices[0].message.content
        streamed = client.chat.completions.create(model="auto", max_tokens=8, temperature=0, stream=True,
                                                  messages=[{"role": "user", "content": "Say hi."}])
        assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
