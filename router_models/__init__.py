"""Routers that decide, per prompt, whether the small or the large model should answer.

`load_router(name_or_path)` is the one entry point the gateway needs. Importing this package is
cheap (numpy only); the MiniLM encoder loads its backend on first use.

`default` scores the gateway's shared MiniLM embedding (computed once per request, also used by the
semantic cache); `fast` needs no transformer at all (static word-piece vectors, ~0.1 ms per prompt)
for deployments that must route thousands of prompts per second on a CPU, at some routing quality.
"""

from __future__ import annotations

from pathlib import Path

from .base import Router

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "default.npz"
FAST_WEIGHTS = WEIGHTS_DIR / "fast.npz"
ROUTER_NAMES = ("default", "embedding", "fast", "length", "random")


def load_router(name_or_path: str = "default") -> Router:
    """`default`/`embedding`, `fast`: the shipped learned routers; `length`, `random`: baselines; else a file path."""
    from .baselines import PromptLengthRouter, RandomRouter
    from .head import Head, LearnedRouter

    if name_or_path in ("default", "embedding"):
        return LearnedRouter(Head.load(DEFAULT_WEIGHTS), name="embedding")
    if name_or_path == "fast":
        return LearnedRouter(Head.load(FAST_WEIGHTS), name="fast")
    if name_or_path == "length":
        return PromptLengthRouter()
    if name_or_path == "random":
        return RandomRouter()
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"unknown router {name_or_path!r}: expected one of {', '.join(ROUTER_NAMES)} "
                         "or the path of a weights file from `turnout router train`")
    return LearnedRouter(Head.load(path), name=f"embedding:{path.stem}")


__all__ = ["DEFAULT_WEIGHTS", "FAST_WEIGHTS", "ROUTER_NAMES", "Router", "load_router"]
