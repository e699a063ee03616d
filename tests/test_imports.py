"""A gateway in front of remote servers never loads torch or transformers (~300 MB of RSS and seconds of
start-up): they are imported only where an embedded model, the MiniLM encoder or a judge needs them. The
default router (static word-piece vectors) and an exact-only cache are part of such a gateway.
tests/test_remote_only_install.py checks the same in a venv where torch is not even installed."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

REMOTE_ONLY = """
import sys
from fastapi.testclient import TestClient
from gateway.api import create_app
from gateway.config import parse_config

config = parse_config('''
tiers:
  small: {deployments: [{kind: openai, model: m, url: "http://127.0.0.1:9/v1"}]}
  large: {deployments: [{kind: openai, model: m, url: "http://127.0.0.1:9/v1"}]}
routing: {router: default}
cache: {semantic_enabled: false}
''')
with TestClient(create_app(config)) as client:
    assert client.get("/health").status_code == 200
print(sorted({name.split(".")[0] for name in sys.modules} & {"torch", "transformers", "sentence_transformers"}))
"""


def test_a_gateway_in_front_of_remote_servers_loads_no_torch():
    result = subprocess.run([sys.executable, "-c", REMOTE_ONLY], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
