"""Load a causal LM and its tokenizer for the engine: float32 on CPU (bf16 on a GPU), or the store's
int8 conversion of it (engine/quantized.py), which runs on the CPU."""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from engine.packed_linear import pack_linears, packing_available
from engine.quantized import is_int8_dir, load_int8
from engine.stepwise_attention import STEPWISE

DEFAULT_MAX_CONTEXT = 8192

# transformers initialises models on the meta device through process-global state, so two loads in
# parallel threads (two engines, or an engine and the router's encoder) corrupt each other: one lock.
LOAD_LOCK = threading.RLock()


@dataclass
class LoadedModel:
    model_id: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    eos_token_ids: frozenset[int]
    context_length: int
    device: torch.device


def load_model(model_id: str, location: str, *, device: str | None = None,
               max_context: int = DEFAULT_MAX_CONTEXT, pack: bool = False) -> LoadedModel:
    """`location` is a local directory or a Hugging Face repo id (resolved by engine.store).

    `pack` puts the linear layers of an fp32 CPU model in oneDNN's layout (engine.packed_linear): faster
    for batched and speculative steps and batch-invariant; leave it off for a model to be quantized.
    An int8 dir (`store.resolve(..., weights="int8")`) loads as it was converted, on the CPU."""
    int8 = is_int8_dir(location)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() and not int8 else "cpu"))
    if int8 and target.type != "cpu":
        raise ValueError(f"{model_id}: int8 weights run on the CPU; use weights: fp32 on {target.type}")
    dtype = torch.float32 if target.type == "cpu" else torch.bfloat16
    with LOAD_LOCK:
        tokenizer = load_tokenizer(location)
        if int8:
            model = load_int8(location)
        else:
            model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, attn_implementation=STEPWISE)
            model.to(target).eval()  # type: ignore[arg-type]  # transformers wraps Module.to, typing the bound call wrongly
            if pack and dtype == torch.float32 and packing_available(target):
                pack_linears(model)
    return LoadedModel(
        model_id=model_id,
        model=model,
        tokenizer=tokenizer,
        eos_token_ids=_eos_ids(model, tokenizer),
        context_length=min(getattr(model.config, "max_position_embeddings", max_context), max_context),
        device=target,
    )


# The tokenizer files that define a tokenizer apart from its chat template (transformers' names).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model")
_TOKENIZERS: weakref.WeakValueDictionary[str, PreTrainedTokenizerBase] = weakref.WeakValueDictionary()


def load_tokenizer(location: str) -> PreTrainedTokenizerBase:
    """The tokenizer of the model at `location`, sharing its backend with any loaded model whose tokenizer
    files are the same bytes (both built-in Qwen tiers): a Qwen fast tokenizer holds ~95 MB, so the
    default pair would otherwise carry two. The share is a shallow copy with this model's own chat
    template (the two Qwen tiers' templates differ). Sharing is safe across the engines' threads because
    the engine only encodes and decodes: it never sets truncation or padding, the backend's only
    mutating calls."""
    key = _tokenizer_key(location)
    shared = _TOKENIZERS.get(key) if key is not None else None
    if shared is None:
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(location)
        if key is not None:
            _TOKENIZERS[key] = tokenizer
        return tokenizer
    tokenizer = copy.copy(shared)
    tokenizer.chat_template = _chat_template(Path(location))
    return tokenizer


def _tokenizer_key(location: str) -> str | None:
    """sha256 over a local model dir's tokenizer files (None for a hub id: nothing local to compare)."""
    directory = Path(location)
    if not directory.is_dir():
        return None
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = directory / name
        if path.is_file():
            digest.update(f"{name}\0{path.stat().st_size}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _chat_template(directory: Path) -> str | None:
    """Where transformers reads a local dir's template from: chat_template.jinja, else the config's key."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = directory / "tokenizer_config.json"
    template = json.loads(config.read_text(encoding="utf-8")).get("chat_template") if config.is_file() else None
    return template if isinstance(template, str) else None


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Chat models end turns with tokens beyond eos_token (e.g. Qwen's <|im_end|>): collect them all."""
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return frozenset(ids)
