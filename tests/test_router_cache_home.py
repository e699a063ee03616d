"""The encoder's derived files (ONNX export, static tables, cached embeddings) live under the model store's
home: `$TURNOUT_HOME` moves them with the models instead of leaving them in ~/.cache/turnout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from router_models import encoder as encoder_module
from router_models import static as static_module
from router_models.derived import cache_root
from router_models.embedding_cache import cached_embed
from router_models.encoder import EMBEDDING_DIM, Encoder, bundled_model_dir
from router_models.static import StaticEncoder


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return bundled_model_dir()  # from the real store, before a test moves the home


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("TURNOUT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class CountingEncoder:
    name = "counting"

    def __init__(self) -> None:
        self.embedded = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded += len(texts)
        return np.ones((len(texts), EMBEDDING_DIM), np.float32)


def test_the_cache_root_is_the_store_home_unless_given(home: Path, tmp_path: Path) -> None:
    assert cache_root() == home
    assert cache_root(tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_cached_embeddings_go_under_turnout_home(home: Path) -> None:
    encoder = CountingEncoder()
    cached_embed(encoder, ["a", "b"])
    assert (home / "embeddings" / "counting.npz").is_file()
    cached_embed(encoder, ["a", "b"])
    assert encoder.embedded == 2  # the second call read the file under the home


def test_the_onnx_export_is_looked_up_under_turnout_home(home: Path, model_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Path] = []

    def onnx_embedder(model: Path, num_threads: int | None, cache_dir: Path, onnx_file: object) -> object:
        asked.append(cache_dir)
        return lambda input_ids, attention_mask: np.zeros((len(input_ids), EMBEDDING_DIM), np.float32)

    monkeypatch.setattr(encoder_module, "_onnx_embedder", onnx_embedder)
    Encoder(model_dir, backend="onnx")
    assert asked == [home]


def test_the_static_table_is_cached_under_turnout_home(home: Path, model_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Path] = []

    def load_table(table: str, model: Path, cache_dir: Path) -> np.ndarray:
        asked.append(cache_dir)
        return np.zeros((30522, EMBEDDING_DIM), np.float32)

    monkeypatch.setattr(static_module, "load_table", load_table)
    StaticEncoder("distilled", model_dir)
    assert asked == [home]
