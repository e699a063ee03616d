"""The engine's int8 weight format: converted once from a float model, loaded without a float copy.

Conversion (the model store calls it once per model, engine/store.py): load the float32 model, fold
SmoothQuant scales into it (engine/smoothquant.py), quantize every linear layer and the embedding table
per output row, and save those int8 tensors with their scales, the remaining (norm) weights, the config
and the tokenizer. Loading builds the model skeleton without allocating weights, installs
`Int8Linear`/`Int8Embedding` modules from the file and copies the small tensors out of it, so no
float32 weights and no mapped checkpoint stay resident. A model converted from a GGUF keeps the GGUF's own
quantized blocks for its input embedding (engine/gguf_embedding.py); otherwise the embedding is int8 rows,
which a tied output head reuses, packed once more for the matrix kernel.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from engine.gguf_embedding import GgufEmbedding, dequantize_rows, read_gguf_embedding
from engine.int8_linear import Int8Embedding, Int8Linear, quantize_weight
from engine.packed_linear import replace_module
from engine.smoothquant import CALIBRATION_TEXT, SMOOTHABLE, input_maxima, smooth
from engine.stepwise_attention import STEPWISE

WEIGHTS_FILE = "model-int8.safetensors"
FORMAT_FILE = "turnout-weights.json"


def is_int8_dir(location: str) -> bool:
    return (Path(location) / FORMAT_FILE).is_file()


@torch.inference_mode()
def convert_int8(source: str, out_dir: Path, *, gguf: Path | None = None) -> dict[str, object]:
    """Write the int8 form of the float model at `source` (a dir or repo id) into `out_dir`; return what
    the store's manifest should say about it. `gguf`: the file `source` was converted from, whose
    embedding blocks are kept when they are exactly the float model's embedding."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]  # transformers wraps Module.eval untyped
    smoothed = model.config.model_type in SMOOTHABLE
    if smoothed:
        calibration = tokenizer.encode(CALIBRATION_TEXT.read_text(), add_special_tokens=False)
        smooth(model, input_maxima(model, calibration))
    head, tied = _head(model), _is_tied(model)
    head_weight = f"{_name_of(model, head)}.weight" if head is not None else None
    tensors: dict[str, torch.Tensor] = {}
    quantized_names = set()
    embedding_name = _embedding_name(model)
    embedding_weight = model.get_input_embeddings().weight
    assert isinstance(embedding_weight, torch.Tensor)
    kept = _gguf_blocks(gguf, embedding_weight) if gguf is not None else None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not (tied and module is head and kept is None):
            weight_int8, scale = quantize_weight(module.weight)
            tensors[f"{name}.weight_int8"], tensors[f"{name}.weight_scale"] = weight_int8, scale
            if module.bias is not None:
                tensors[f"{name}.bias"] = module.bias.detach().float().contiguous()
            quantized_names.add(name)
    if kept is not None:
        tensors[f"{embedding_name}.gguf_blocks"] = kept[0]
    else:
        tensors[f"{embedding_name}.weight_int8"], tensors[f"{embedding_name}.weight_scale"] = \
            quantize_weight(embedding_weight)
    quantized_names.add(embedding_name)
    for name, tensor in model.state_dict().items():
        if name.rpartition(".")[0] not in quantized_names and name != head_weight:
            tensors[name] = tensor.detach().float().contiguous()
    save_file(tensors, out_dir / WEIGHTS_FILE)
    model.config.save_pretrained(out_dir)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    facts: dict[str, object] = {
        "weights": "int8", "smoothquant": smoothed, "tied_head": tied,
        "embedding": "int8" if kept is None else kept[1],
        "embedding_bytes": embedding_weight.numel() if kept is None else kept[0].numel(),
        "quantized_layers": len(quantized_names)}
    (out_dir / FORMAT_FILE).write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def load_int8(location: str) -> PreTrainedModel:
    """The model `convert_int8` wrote to `location`, with int8 layers; float32 for everything else."""
    config = AutoConfig.from_pretrained(location)
    with torch.device("meta"):
        model: PreTrainedModel = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]  # untyped
            config, dtype=torch.float32, attn_implementation=STEPWISE)
    tensors = load_file(Path(location) / WEIGHTS_FILE)
    embedding_name = _embedding_name(model)
    embedding: Int8Embedding | GgufEmbedding
    if f"{embedding_name}.gguf_blocks" in tensors:
        facts = json.loads((Path(location) / FORMAT_FILE).read_text())
        embedding = GgufEmbedding(tensors[f"{embedding_name}.gguf_blocks"], facts["embedding"])
    else:
        embedding = Int8Embedding(tensors[f"{embedding_name}.weight_int8"], tensors[f"{embedding_name}.weight_scale"])
    replace_module(model, embedding_name, embedding)
    head = _head(model)
    quantized = {embedding_name}
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        if module is head and f"{name}.weight_int8" not in tensors:  # tied: the embedding's rows
            assert isinstance(embedding, Int8Embedding)
            replace_module(model, name, Int8Linear(embedding.weight_int8, embedding.weight_scale, None))
        else:
            replace_module(model, name, Int8Linear(tensors[f"{name}.weight_int8"], tensors[f"{name}.weight_scale"],
                                                   tensors.get(f"{name}.bias")))
        quantized.add(name)
    rest = {name: tensor.clone() for name, tensor in tensors.items() if name.rpartition(".")[0] not in quantized}
    del tensors
    model.load_state_dict(rest, strict=False, assign=True)
    _materialize_buffers(model, config)
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise ValueError(f"{location}: int8 checkpoint has no values for {', '.join(left[:5])}")
    model.eval()  # type: ignore[no-untyped-call]  # transformers wraps Module.eval untyped
    return model


def _gguf_blocks(gguf: Path, embedding_weight: torch.Tensor) -> tuple[torch.Tensor, str] | None:
    """The GGUF's embedding blocks, if they dequantize to exactly the float model's embedding (they do when
    the float model is the store's conversion of that file; a check, not an assumption)."""
    found = read_gguf_embedding(str(gguf))
    if found is None or found[0].shape[0] != embedding_weight.shape[0]:
        return None
    blocks, quant_type = found
    for start in range(0, blocks.shape[0], 4096):
        rows = slice(start, start + 4096)
        if not torch.equal(dequantize_rows(blocks[rows], quant_type), embedding_weight[rows]):
            return None
    return found


def _materialize_buffers(model: PreTrainedModel, config: object) -> None:
    """Non-persistent buffers (rotary frequencies) are not in any checkpoint: recompute them on the CPU
    by building those modules again there."""
    for name, module in list(model.named_modules()):
        if any(buffer.is_meta for buffer in module.buffers(recurse=False)) and hasattr(module, "rope_type"):
            replace_module(model, name, type(module)(config=config))


def _embedding_name(model: PreTrainedModel) -> str:
    return _name_of(model, model.get_input_embeddings())


def _head(model: PreTrainedModel) -> nn.Module | None:
    head: nn.Module | None = model.get_output_embeddings()  # type: ignore[no-untyped-call]  # transformers: untyped
    return head


def _name_of(model: PreTrainedModel, module: nn.Module) -> str:
    return str(next(name for name, candidate in model.named_modules() if candidate is module))


def _is_tied(model: PreTrainedModel) -> bool:
    head = _head(model)
    return head is not None and head.weight is model.get_input_embeddings().weight

