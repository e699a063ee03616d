"""oneDNN-packed linear layers for CPU inference.

Why: torch's CPU `F.linear` goes to MKL, which on this AMD CPU runs the 2-16-row matrices of batched
decoding and speculative verification slowly (two rows cost twice one), and its result for a row changes
with the number of rows beside it. oneDNN with the weight reordered once into its blocked layout for
8-row inputs is bitwise batch-invariant: a row gets the same result alone, in a batch, or with drafts
appended. Its kernel for fewer than 4 rows is slower than the one for 4 (the large output head: 32 ms
for 1 row, 24 ms for 4), so short inputs are padded to 4 rows. bench/engine/step_cost.py measures it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ROWS_HINT = 8
MIN_ROWS = 4


def packing_available(device: torch.device) -> bool:
    return device.type == "cpu" and torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]


class PackedLinear(nn.Module):
    """A frozen nn.Linear whose weight lives in oneDNN's blocked layout (fp32, CPU, inference only)."""

    def __init__(self, linear: nn.Linear, rows_hint: int = ROWS_HINT, min_rows: int = MIN_ROWS):
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.min_rows = min_rows
        weight = linear.weight.detach().float().contiguous()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach().float().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        count = rows.shape[0]
        if count < self.min_rows:
            rows = F.pad(rows, (0, 0, 0, self.min_rows - count))
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(rows.contiguous(), self.packed, self.bias, "none",
                                                                [], "")
        return out[:count].reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Install `module` at the dotted path `name` (as named by `model.named_modules()`)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def pack_linears(model: nn.Module) -> int:
    """Replace every fp32 nn.Linear in `model` with a PackedLinear; return how many were replaced.

    A tied output head keeps sharing its embedding matrix (the embedding lookup still needs the dense
    copy); the packed head is an extra copy of that one matrix. The remaining parameters and buffers are
    copied too: a safetensors checkpoint is one memory map, and a single view into it (a norm weight)
    would keep the whole file's dense weights mapped beside their packed copies (6 GB for the 1.5B).
    """
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and module.weight.dtype == torch.float32]
    for name, linear in targets:
        replace_module(model, name, PackedLinear(linear))
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
    return len(targets)
