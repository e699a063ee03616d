"""Where the files derived from the MiniLM weights live: under the model store's home, named by the weights.

The ONNX export (onnx_export.py), the distilled static table (static.py) and cached prompt embeddings
(embedding_cache.py) are all computed from the bundled model and kept between runs; they follow
`$TURNOUT_HOME` with the models, and a digest of the weights names them so a changed model is
never read through another's files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else the model store's home (`$TURNOUT_HOME`, else `$XDG_CACHE_HOME/turnout`, else
    `~/.cache/turnout`: engine.store.turnout_home)."""
    from engine.store import turnout_home  # lazy: importing router_models stays numpy-only

    return Path(cache_dir) if cache_dir is not None else turnout_home()


def weights_digest(model_dir: Path) -> str:
    """12 hex digits identifying `model_dir`'s weights: its first MiB and its size (cheap at every start)."""
    weights = model_dir / "model.safetensors"
    digest = hashlib.sha1()
    with weights.open("rb") as f:
        digest.update(f.read(1 << 20))
    digest.update(str(weights.stat().st_size).encode())
    return digest.hexdigest()[:12]
