"""A remote-only install serves: `pip install` of the project without the engine extra into a fresh venv,
then that venv's `turnout serve` in front of a real upstream (`turnout engine serve` with SmolLM2-135M,
run from the test's own environment), one request through the official openai SDK, the default router
and an exact cache on the way, and no torch, transformers or sentence-transformers in that venv.

The install is a normal one (pip resolves the base dependencies; nothing is `--no-deps`), from a copy of
the package sources so no build/ or egg-info lands in the checkout. Only where the wheels come from is
arranged for speed: pip's HTTP cache is not written where the index's responses carry no cache headers
(this sandbox's proxy), so the test keeps a wheelhouse in pytest's cache dir (.pytest_cache/). A run
installs from it with `--no-index`; when it lacks something the base dependencies resolve to (first run,
or pyproject changed), it is filled from the index first with `pip wheel`, which resolves the same base
dependencies and never the extra. Skipped only when pip cannot reach an index for that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from conftest import ROOT, TurnoutProcess

from gateway.extras import ENGINE_MODULES

INSTALL_TIMEOUT_S = 900  # a first run downloads the base dependencies (~60 MB) from the index
# What pip prints when it cannot reach the index at all (as opposed to a resolution that fails).
NO_INDEX_MARKERS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                    "ConnectTimeoutError", "ProxyError", "No route to host")
ABSENT = f"import importlib.util as u; print([m for m in {ENGINE_MODULES!r} if u.find_spec(m)])"
WHERE = "import gateway; print(gateway.__file__)"


@dataclass
class RemoteOnlyVenv:
    root: Path
    install_s: float

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def turnout(self) -> Path:
        return self.root / "bin" / "turnout"


def _env() -> dict[str, str]:
    """The test's environment without what would put the checkout on that venv's path or pick a config."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TURNOUT_CONFIG", "VIRTUAL_ENV")}


def _copy_sources(dest: Path) -> Path:
    """pyproject.toml, README.md and the packages pyproject says it ships."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {pattern.rstrip("*").rstrip(".") for pattern in project["tool"]["setuptools"]["packages"]["find"]
                ["include"]}
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for package in sorted(packages):
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=INSTALL_TIMEOUT_S, env=_env(), check=False)


def _fill_wheelhouse(python: Path, source: Path, wheelhouse: Path) -> None:
    """Wheels of everything the base dependencies resolve to, and the build backend, from the index."""
    result = _pip(python, "wheel", "-q", "--wheel-dir", str(wheelhouse), str(source), "setuptools>=68")
    if result.returncode != 0:
        output = result.stdout + result.stderr
        unreachable = next((line for line in output.splitlines() if any(m in line for m in NO_INDEX_MARKERS)), None)
        if unreachable is not None:
            pytest.skip(f"pip cannot reach a package index: {unreachable.strip()[:300]}")
        pytest.fail(f"pip wheel failed:\n{output[-3000:]}")


@pytest.fixture(scope="module")
def remote_only_venv(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> RemoteOnlyVenv:
    work = tmp_path_factory.mktemp("remote-only")
    source = _copy_sources(work / "src")
    wheelhouse = pytestconfig.cache.mkdir("remote-only-wheelhouse")
    venv = RemoteOnlyVenv(work / "venv", install_s=0.0)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv.root)], check=True, timeout=120, env=_env())
    offline = ("install", "-q", "--no-compile", "--no-index", "--find-links", str(wheelhouse), str(source))
    result = _pip(venv.python, *offline)
    if result.returncode != 0:  # the wheelhouse lacks something: fill it from the index, then install again
        _fill_wheelhouse(venv.python, source, wheelhouse)
        result = _pip(venv.python, *offline)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    venv.install_s = time.monotonic() - started
    print(f"remote-only venv created and installed in {venv.install_s:.1f}s")
    return venv


def _run(venv: RemoteOnlyVenv, code: str) -> str:
    return subprocess.run([str(venv.python), "-c", code], capture_output=True, text=True, check=True, timeout=60,
                          env=_env(), cwd=venv.root).stdout.strip()


def test_the_install_has_the_gateway_and_no_engine(remote_only_venv):
    assert _run(remote_only_venv, ABSENT) == "[]"
    assert _run(remote_only_venv, WHERE).startswith(str(remote_only_venv.root))  # the installed copy


def test_the_embedded_default_says_which_extra_it_needs(remote_only_venv):
    result = subprocess.run([str(remote_only_venv.turnout), "serve"], capture_output=True, text=True, timeout=120,
                            env=_env(), cwd=remote_only_venv.root)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.startswith("turnout: error: install turnout[engine] for the small tier's embedded")
    assert "Traceback" not in result.stderr


@pytest.fixture
def remote_only_gateway(remote_only_venv: RemoteOnlyVenv, engine_server: TurnoutProcess, tiny_model: str,
                        tmp_path: Path) -> Iterator[TurnoutProcess]:
    """The venv's `turnout serve`: both tiers on the upstream, the default router, an exact-only cache."""
    deployment = f'{{deployments: [{{kind: openai, model: "{tiny_model}", url: "{engine_server.base_url}"}}]}}'
    config = tmp_path / "turnout.yaml"
    config.write_text(f"tiers:\n  small: {deployment}\n  large: {deployment}\n"
                      "routing: {router: default}\ncache: {semantic_enabled: false}\n")
    gateway = TurnoutProcess()
    gateway.env = _env()  # TurnoutProcess adds to os.environ; this venv must not see the checkout
    gateway.argv = [str(remote_only_venv.turnout), "serve", "--config", str(config), "--port", str(gateway.port)]
    gateway.start(timeout_s=120)
    yield gateway
    gateway.stop()


@pytest.mark.slow
def test_a_remote_only_install_serves_through_a_real_upstream(remote_only_gateway):
    client = openai.OpenAI(base_url=remote_only_gateway.base_url, api_key="sk-remote-only", max_retries=0)

    def ask() -> tuple[str, dict[str, str]]:
        response = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0)
        return response.parse().choices[0].message.content or "", dict(response.headers)

    answer, headers = ask()
    assert answer.strip()
    assert headers["x-turnout-route-reason"] == "router" and headers["x-turnout-tier"] in ("small", "large")
    assert headers["x-turnout-cache"] == "miss"
    again, again_headers = ask()
    assert (again, again_headers["x-turnout-cache"]) == (answer, "hit")
