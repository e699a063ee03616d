"""Where the cache's parts live: one list of guards that the verifier asks, fitted weights as package data,
the Redis client and guard in their own module (built without the synchronous-Retry warning), and the
arrows between them one way: storage → matching, cache and governance → redis_guard, never back."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
from conftest import ROOT

from gateway.cache import CacheConfig
from gateway.cache.matching import guards, models, verifier
from gateway.redis_guard import RedisGuard, redis_client


def test_the_guard_lists_are_slices_of_the_one_list() -> None:
    every = [guard.check for guard in guards.GUARDS]
    assert sorted(guards.HARD + guards.SOFT, key=every.index) == every and not set(guards.HARD) & set(guards.SOFT)


def test_the_verifier_weighs_the_soft_guards_as_its_features() -> None:
    names = tuple(check.__name__.removesuffix("_mismatch") for check in guards.SOFT)
    assert names == verifier.SOFT_FEATURES == verifier.FEATURES[1:4]


@pytest.mark.parametrize(("query", "cached"), [
    ("How do I enable 2FA?", "How do I disable 2FA?"),
    ("Convert 5 km to miles", "Convert 50 km to miles"),
    ("Who founded Microsoft?", "Who founded Apple?"),  # a soft guard: weighed, not obeyed
])
def test_the_verifier_vetoes_outright_exactly_where_a_hard_guard_fires(query: str, cached: str) -> None:
    assert verifier.assess(query, cached, 0.9).hard == guards.hard_veto(query, cached)
    assert verifier.assess(query, cached, 0.9).signals in ((), guards.soft_signals(query, cached))


@pytest.mark.parametrize("model", ["lexical", "aligned", "contextual"])
def test_fitted_weights_are_data_files_of_the_package(model: str) -> None:
    path = models.weights_file(model)
    assert path.parent == ROOT / "gateway" / "cache" / "matching" / "weights" and path.is_file()
    fitted = models.load_logistic(model) if model == "lexical" else models.load_mlp(model)
    expected = {"lexical": verifier.FEATURES, "aligned": verifier.ALIGNED_FEATURES,
                "contextual": verifier.CONTEXTUAL_FEATURES}[model]
    assert fitted.features == expected and 0.0 < fitted.min_probability < 1.0


def test_the_package_data_ships_the_weights() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"cache/matching/weights/*.json"' in pyproject


def test_the_async_client_gets_the_async_retry() -> None:
    """redis-py converts a synchronous Retry given to an asyncio client, warning on every start."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client = redis_client(CacheConfig(), "redis://127.0.0.1:9")
    assert type(client.connection_pool.connection_kwargs["retry"]).__module__ == "redis.asyncio.retry"
    assert RedisGuard.of(CacheConfig()).timeout_s == CacheConfig().operation_timeout_ms / 1000


def _imports(path: Path) -> set[str]:
    """Modules a file imports (at any depth, lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "gateway" / "cache" / "matching").glob("*.py")), ids=lambda p: p.name)
def test_matching_never_imports_the_cache_storage(path: Path) -> None:
    outside = {name for name in _imports(path) if name.startswith("gateway.cache")
               and not name.startswith("gateway.cache.matching")}
    assert not outside, f"{path.name} imports {sorted(outside)}"


@pytest.mark.parametrize("name", ["redis_guard.py", "state_store.py", "governance.py", "auth.py", "limits.py",
                                  "usage.py"])
def test_governance_redis_plumbing_does_not_live_in_the_cache(name: str) -> None:
    """Governance may read the cache's settings (and be handed the started cache); the Redis client and guard
    are gateway/redis_guard.py's, which needs nothing of the cache."""
    imported = _imports(ROOT / "gateway" / name)
    allowed = set() if name == "redis_guard.py" else {"gateway.cache", "gateway.cache.ResponseCache",
                                                       "gateway.cache.config", "gateway.cache.config.CacheConfig"}
    assert not {module for module in imported if module.startswith("gateway.cache")} - allowed
