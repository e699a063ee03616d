"""`turnout serve` prints one "turnout ready" line on stdout once it can serve (models loaded, /ready
200), after uvicorn's "running on" line, which comes as soon as the socket is open."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
from conftest import ROOT, STARTUP_TIMEOUT_S, free_port


def test_serve_prints_ready_once_it_can_answer(tiny_model: str, tmp_path: Path):
    config = tmp_path / "turnout.yaml"
    config.write_text(f"""
tiers:
  small: {{deployments: [{{kind: embedded, model: {tiny_model}}}]}}
routing: {{router: none}}
cache: {{semantic_enabled: false}}
""")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
                                "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("turnout ready"):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(STARTUP_TIMEOUT_S), "no ready line:\n" + "".join(lines[-20:])
        # the line's promise: the gateway answers /ready and serves a completion right now
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).status_code == 200
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
            "model": "small", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=10)
    ready_at = next(i for i, line in enumerate(lines) if line.startswith("turnout ready"))
    running_at = next(i for i, line in enumerate(lines) if "Uvicorn running on" in line)
    assert running_at < ready_at
    assert sum(line.startswith("turnout ready") for line in lines) == 1
    assert f":{port}/v1" in lines[ready_at] and f"small-0: {tiny_model}" in lines[ready_at]
