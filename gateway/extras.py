"""Which parts of a config need the `engine` extra, checked before anything starts.

`pip install turnout` is a gateway in front of remote servers: no torch, transformers or
sentence-transformers. The embedded engine, and the MiniLM sentence encoder that the semantic cache
and the `embedding` router run on, need `turnout[engine]`. Without this check a missing extra shows
up as an ImportError inside a background start-up task: logged once, then a gateway whose /ready
never turns 200. Here it is one line at startup that names the feature and the fix.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.config import TurnoutConfig

ENGINE_EXTRA = "turnout[engine]"
ENGINE_MODULES = ("torch", "transformers", "sentence_transformers")


class MissingExtra(ValueError):
    """A configured feature needs an extra that is not installed. A ValueError: `create_app`'s callers
    already print those as one line and exit 1."""


def missing_engine_modules() -> list[str]:
    """The engine extra's top-level modules this environment lacks (find_spec imports nothing)."""
    return [name for name in ENGINE_MODULES if importlib.util.find_spec(name) is None]


def engine_features(config: TurnoutConfig, *, router_needs_embedding: bool) -> list[str]:
    """What in `config` runs on the engine extra, each with how to do without it."""
    features = [f"the {tier} tier's embedded {deployment.model} (or serve it elsewhere: kind: openai)"
                for tier, deployment in config.deployments() if deployment.kind == "embedded"]
    cache = config.cache
    if cache is not None and cache.enabled and cache.semantic_enabled:
        features.append("the semantic cache's MiniLM encoder (or cache: {semantic_enabled: false}: exact hits only)")
    if router_needs_embedding:
        features.append(f"the MiniLM embedding that routing.router {config.routing.router} scores "
                        "(or routing.router: default, which needs no torch)")
    return features


def require_engine_extra(config: TurnoutConfig, *, router_needs_embedding: bool) -> None:
    """Raise MissingExtra when `config` needs the engine extra and it is not installed."""
    missing = missing_engine_modules()
    features = engine_features(config, router_needs_embedding=router_needs_embedding) if missing else []
    if features:
        raise MissingExtra(f"install {ENGINE_EXTRA} for {'; '.join(features)} — {_missing(missing)}")


def engine_hint(error: ModuleNotFoundError, what: str) -> MissingExtra | None:
    """The MissingExtra an ImportError of an engine module means for `what`; None for any other module."""
    top = (error.name or "").split(".")[0]
    if top not in ENGINE_MODULES:
        return None
    return MissingExtra(f"install {ENGINE_EXTRA} for {what} — {_missing([top])}")


def _missing(modules: list[str]) -> str:
    return f"{', '.join(modules)} not installed here (pip install '{ENGINE_EXTRA}')"


@contextmanager
def needs_engine(what: str) -> Iterator[None]:
    """Turn an engine module's ImportError inside the block into MissingExtra naming `what`: for the
    parts whose needs show only once loaded (a router weights file trained on the transformer)."""
    try:
        yield
    except ModuleNotFoundError as error:
        hint = engine_hint(error, what)
        if hint is None:
            raise
        raise hint from error
