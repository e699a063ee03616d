"""Routers that decide, per prompt, whether the small or the large model should answer.

`load_router(name_or_path)` is the one entry point the gateway needs. Importing this package is
cheap (numpy only); the MiniLM encoder loads its backend on first use.

`default` (alias `static`) needs no transformer: static MiniLM word-piece vectors, ~0.25 ms per
prompt, thousands of prompts/s on 2 CPU cores, subject-held-out APGR level with the old MiniLM head.
`embedding` adds the gateway's shared MiniLM embedding (computed once per request for the semantic
cache anyway) to the static vector: better APGR, but on its own it costs a transformer pass (~15 ms).
`surprisal` (router_models/surprisal.py) trains nothing: the small model's mean surprisal over the
prompt; it loads SmolLM2-135M and costs a forward pass of it per prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import Router

if TYPE_CHECKING:
    from .head import LearnedRouter

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "default.npz"
EMBEDDING_WEIGHTS = WEIGHTS_DIR / "embedding.npz"
ROUTER_NAMES = ("default", "static", "embedding", "surprisal", "length", "random")


def load_router(name_or_path: str = "default") -> Router:
    """`default`/`static`, `embedding`: the shipped learned routers; `surprisal`: the small model's uncertainty
    over the prompt; `length`, `random`: baselines; else a weights file."""
    from .baselines import PromptLengthRouter, RandomRouter
    from .head import Head, LearnedRouter

    if name_or_path in ("default", "static"):
        return _loaded(LearnedRouter(Head.load(DEFAULT_WEIGHTS), name="static"))
    if name_or_path == "embedding":
        return _loaded(LearnedRouter(Head.load(EMBEDDING_WEIGHTS), name="embedding"))
    if name_or_path == "surprisal":
        from .surprisal import SurprisalRouter

        return SurprisalRouter()
    if name_or_path == "length":
        return PromptLengthRouter()
    if name_or_path == "random":
        return RandomRouter()
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"unknown router {name_or_path!r}: expected one of {', '.join(ROUTER_NAMES)} "
                         "or the path of a weights file from `turnout router train`")
    return _loaded(LearnedRouter(Head.load(path), name=f"embedding:{path.stem}"))


def _loaded(router: LearnedRouter) -> LearnedRouter:
    router.load_encoder()  # at gateway start-up, not inside the first request
    return router


__all__ = ["DEFAULT_WEIGHTS", "EMBEDDING_WEIGHTS", "ROUTER_NAMES", "Router", "load_router"]
