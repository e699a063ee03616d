"""oneDNN-packed linear layers: same function as nn.Linear, and a row's result never depends on its batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.packed_linear import PackedLinear, pack_linears, packing_available

pytestmark = pytest.mark.skipif(not packing_available(torch.device("cpu")), reason="torch built without oneDNN")


@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_matches_nn_linear(bias: bool):
    torch.manual_seed(0)
    linear = nn.Linear(96, 200, bias=bias)
    x = torch.randn(3, 5, 96)
    packed = PackedLinear(linear)
    assert packed(x).shape == (3, 5, 200)
    assert torch.allclose(packed(x), linear(x), atol=1e-5)
    assert packed(x[0, 0]).shape == (200,)


def test_packed_rows_are_batch_invariant():
    """Decoding a sequence alone, in a batch, or with drafts appended must not change its logits."""
    torch.manual_seed(1)
    packed = PackedLinear(nn.Linear(128, 512))
    x = torch.randn(16, 128)
    full = packed(x)
    for rows in range(1, 17):
        assert torch.equal(packed(x[:rows]), full[:rows])


def test_pack_linears_replaces_every_linear_and_keeps_the_function():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Sequential(nn.Linear(64, 16)))
    x = torch.randn(4, 32)
    expected = model(x)
    assert pack_linears(model) == 2
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert torch.allclose(model(x), expected, atol=1e-5)
