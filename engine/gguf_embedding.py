"""An embedding table kept in the GGUF's own quantized blocks, dequantized only for the rows a step reads.

Why: the int8 format needs the output head in oneDNN's packed layout for its matrix kernel, and a
lookup needs plain rows, so a model holds its vocabulary matrix twice. The GGUFs the built-in models
come from store the input embedding in 4–5 bits (Q4_K, Q5_0), the precision they were published in:
keeping those blocks (0.56–0.69 bytes a weight, against 1 for int8 rows) saves memory and adds no error
on top of the published weights, which int8 rows re-quantized from them would. `gguf.quants` (the
gguf package, maintained with llama.cpp) does the dequantizing.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, quants
from torch import nn

GGUF_EMBEDDING = "token_embd.weight"


def read_gguf_embedding(path: str) -> tuple[torch.Tensor, str] | None:
    """The GGUF's token embedding as (uint8 blocks, one row of the vocabulary per row; quant type name),
    or None when it is stored unquantized (F32/F16/BF16: nothing to keep that int8 rows would not beat)."""
    tensor = next((t for t in GGUFReader(path).tensors if t.name == GGUF_EMBEDDING), None)
    if tensor is None or tensor.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16,
                                                GGMLQuantizationType.BF16):
        return None
    return torch.from_numpy(np.array(tensor.data, dtype=np.uint8)), tensor.tensor_type.name


def dequantize_rows(blocks: torch.Tensor, quant_type: str) -> torch.Tensor:
    return torch.from_numpy(quants.dequantize(blocks.numpy(), GGMLQuantizationType[quant_type]))


class GgufEmbedding(nn.Module):
    """nn.Embedding over GGUF blocks: `blocks[i]` holds row i of the table in `quant_type`."""

    def __init__(self, blocks: torch.Tensor, quant_type: str):
        super().__init__()
        self.blocks = blocks.contiguous().clone()  # never a view into a mapped checkpoint
        self.quant_type = quant_type
        self.embedding_dim = dequantize_rows(blocks[:1], quant_type).shape[1]
        self.num_embeddings = blocks.shape[0]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = dequantize_rows(self.blocks[ids.reshape(-1)], self.quant_type)
        return rows.reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.quant_type}"
