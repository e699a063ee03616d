"""Package arrows go one way: an import from a lower layer to a higher one fails, naming file:line.

Layers, bottom to top (docs/architecture.md, "Package layers"): `engine` (with the Drafter seam, the
verification it calls, the speculative config, OpenAI message parsing and the model store), then
`drafters` and `router_models` side by side (each may use the engine, neither the other), then
`gateway` (the composition: it wires drafters into the engine), then `bench`, then `tests`. Every
import counts, including lazy ones inside functions and `importlib.import_module("...")` calls.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from conftest import ROOT

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"engine"}),
    frozenset({"drafters", "router_models"}),
    frozenset({"gateway"}),
    frozenset({"bench"}),
    frozenset({"tests"}),
)
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
# tests/ puts itself on sys.path: its modules (conftest, redis_proc, ...) are imported by bare name
TEST_MODULES = frozenset(path.stem for path in (ROOT / "tests").glob("*.py"))


def package_of(module: str) -> str | None:
    """The layered package a dotted module name belongs to; None for the standard library and third parties."""
    top = module.split(".")[0]
    if top in TEST_MODULES:
        return "tests"
    return top if top in RANK else None


def imported_modules(tree: ast.AST, here: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in `tree`; `here` is the importing module's package path."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            else:
                assert node.module is not None
                yield node.lineno, node.module
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name)
              and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value


def wrong_way_imports(source: str, relative: Path) -> list[str]:
    """`file:line: ...` for each import in `source` (the file at `relative`) that points up or sideways."""
    package = relative.parts[0]
    here = relative.parent.parts  # a module's package, or a package's own for its __init__.py
    problems = []
    for line, module in imported_modules(ast.parse(source, str(relative)), here):
        target = package_of(module)
        if target is None or target == package or RANK[target] < RANK[package]:
            continue
        direction = "beside" if RANK[target] == RANK[package] else "below"
        problems.append(f"{relative}:{line}: {package} imports {module}, but {package} is {direction} {target}")
    return problems


def layered_files() -> Iterator[Path]:
    for package in RANK:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_every_import_points_down_the_layers():
    files = list(layered_files())
    assert {path.relative_to(ROOT).parts[0] for path in files} == set(RANK), "a layered package has no modules"
    problems = [problem for path in files
                for problem in wrong_way_imports(path.read_text(), path.relative_to(ROOT))]
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_the_check_catches_an_arrow_going_up_or_sideways():
    lazy = "def build():\n    from drafters.build import build_drafter\n    return build_drafter\n"
    assert wrong_way_imports(lazy, Path("engine/engine.py")) == [
        "engine/engine.py:2: engine imports drafters.build, but engine is below drafters"]
    assert wrong_way_imports("from ..conversation import user_turns\n", Path("drafters/sub/x.py")) == []
    assert wrong_way_imports("from . import encoder\n", Path("drafters/x.py")) == []
    assert wrong_way_imports("import router_models.encoder\n", Path("drafters/ngram.py")) == [
        "drafters/ngram.py:1: drafters imports router_models.encoder, but drafters is beside router_models"]
    assert wrong_way_imports("importlib.import_module('bench.common')\n", Path("gateway/cli.py")) == [
        "gateway/cli.py:1: gateway imports bench.common, but gateway is below bench"]
    assert wrong_way_imports("from conftest import ROOT\n", Path("bench/common.py")) == [
        "bench/common.py:1: bench imports conftest, but bench is below tests"]
    assert wrong_way_imports("import engine.store, numpy\n", Path("gateway/config.py")) == []
