"""W8A8 linear layers for CPU decoding: int8 weights, activations quantized per row, int32 accumulation.

Why: one-stream decoding on this CPU is bound by reading the weights, so int8 weights (a quarter of
fp32's bytes) make a step several times cheaper. torch's weight-only int8/int4 kernels are slow for the
1-16 rows a decode or verify step has, and fbgemm's dynamic int8 (`quantize_dynamic`) scales the whole
input with one number, so a row's result depends on the rows beside it. Here each row is divided by its
own absolute maximum before it is quantized with one fixed scale, oneDNN's u8×s8 kernel (VNNI/AMX where
the CPU has them, weights prepacked in its blocked layout) accumulates in int32, which is exact, and each
output row is multiplied back by its row's scale: a row's output is bitwise the same alone, in a batch,
or with drafts appended — the batch invariance the engine's speculative decoding relies on.

Outliers in a few activation channels would crush the others' int8 resolution; SmoothQuant (engine/
smoothquant.py: per-channel scales folded into the preceding layer, exact in fp32) moves them into the
weights first, where per-output-channel scales absorb them.
"""

from __future__ import annotations

import torch
from torch import nn

INT8_MAX = 127.0
ZERO_POINT = 128  # activations go to the kernel as uint8: round(x / row_scale) + 128


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (int8 weight of the same shape, fp32 scale per row)."""
    weight = weight.detach().float()
    scale = weight.abs().amax(1).clamp(min=1e-8) / INT8_MAX
    return torch.round(weight / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8), scale


class Int8Linear(nn.Module):
    """A frozen linear layer computing `x @ dequant(W).T + b` with int8 operands (CPU, inference only)."""

    def __init__(self, weight_int8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        self.packed = torch.ops.onednn.qlinear_prepack(weight_int8.contiguous(), None)
        self.weight_scale = weight_scale.float().clone()  # never a view into a mapped checkpoint
        self.zero_points = torch.zeros(self.out_features, dtype=torch.long)
        self.bias = None if bias is None else bias.detach().float().clone()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        weight_int8, scale = quantize_weight(linear.weight)
        return cls(weight_int8, scale, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        row_scale = rows.abs().amax(1, keepdim=True).clamp(min=1e-8) / INT8_MAX
        quantized = torch.round(rows / row_scale).add_(ZERO_POINT).to(torch.uint8)
        out: torch.Tensor = torch.ops.onednn.qlinear_pointwise(
            quantized, 1.0, ZERO_POINT, self.packed, self.weight_scale, self.zero_points, None, 1.0, 0,
            torch.float32, "none", [], "")
        out = out * row_scale
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Embedding(nn.Module):
    """An embedding table kept as int8 rows with a scale each: the lookup dequantizes only the rows it
    reads. A tied output head quantizes the same matrix the same way (one scale per vocabulary row)."""

    def __init__(self, weight_int8: torch.Tensor, weight_scale: torch.Tensor):
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight_int8.shape
        self.weight_int8 = weight_int8.clone()
        self.weight_scale = weight_scale.float().clone()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight_int8[ids].float() * self.weight_scale[ids].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
