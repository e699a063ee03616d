"""Linear head fitting: sample weights act like repeating rows (used to even out subject sizes)."""

from __future__ import annotations

import numpy as np
import torch

from router_models.train import fit_linear


def test_sample_weights_equal_repeated_rows() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (rng.random((40, 2)) < 0.5).astype(np.float32)
    repeats = rng.integers(1, 3, size=40)
    weighted = fit_linear(torch.tensor(x), torch.tensor(y), 1e-3, repeats.astype(np.float64))[0]
    repeated = fit_linear(torch.tensor(np.repeat(x, repeats, axis=0)), torch.tensor(np.repeat(y, repeats, axis=0)),
                           1e-3)[0]
    for a, b in zip(weighted, repeated, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_uniform_weights_change_nothing() -> None:
    rng = np.random.default_rng(1)
    x, y = torch.tensor(rng.normal(size=(30, 4)).astype(np.float32)), torch.tensor((rng.random((30, 2)) < 0.3) * 1.0)
    plain = fit_linear(x, y.float(), 1e-3)[0]
    uniform = fit_linear(x, y.float(), 1e-3, np.full(30, 5.0))[0]
    for a, b in zip(plain, uniform, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
