"""The servers a bench runs as separate processes (instant upstream, turnout, LiteLLM proxy), on free
loopback ports, and their resident memory. Shared by bench/overhead, bench/load and bench/soak."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A child process serving HTTP on 127.0.0.1:`port`; `start` returns once `ready_path` answers 200."""

    def __init__(self, name: str, argv: list[str], port: int, *, ready_path: str = "/health",
                 env: dict[str, str] | None = None, log_path: Path | None = None, cwd: Path = ROOT):
        self.name = name
        self.cwd = cwd
        self.argv = argv
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 300.0) -> ServerProcess:
        # the child keeps its own copy of the log's descriptor
        with open(self.log_path, "ab") if self.log_path else contextlib.nullcontext(subprocess.DEVNULL) as log:
            self.process = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} (log: {self.log_path})")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout_s:g}s (log: {self.log_path})")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self, children: bool = True) -> int:
        """Resident memory of the process and, by default, its descendants (LiteLLM may fork workers,
        turnout's embedded redis-server is its child)."""
        return sum(_rss(pid) for pid in (_tree(self.pid) if children else [self.pid]))

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process tree so far."""
        ticks = 0
        for pid in _tree(self.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def upstream_server(log_dir: Path | None = None) -> ServerProcess:
    port = free_port()
    return ServerProcess("upstream", [sys.executable, "-m", "bench.upstream", "--port", str(port)], port,
                         log_path=log_dir / "upstream.log" if log_dir else None)


def turnout_server(config: Path, env: dict[str, str] | None = None, log_dir: Path | None = None,
                   log_level: str = "warning", code: Path = ROOT, name: str = "turnout") -> ServerProcess:
    """`code`: the checkout whose gateway runs (another one's, to compare code side by side)."""
    port = free_port()
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port),
            "--log-level", log_level]
    return ServerProcess(name, argv, port, ready_path="/ready", env={**(env or {}), "PYTHONPATH": str(code)},
                         log_path=log_dir / f"{name}.log" if log_dir else None, cwd=code)


def litellm_server(config: Path, env: dict[str, str] | None = None, log_dir: Path | None = None) -> ServerProcess:
    """The LiteLLM proxy from its own venv (bench/overhead/install_litellm.sh)."""
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        raise FileNotFoundError(f"{binary} missing: run bench/overhead/install_litellm.sh")
    port = free_port()
    quiet = Path(__file__).with_name("litellm_logging.json")  # access logs off, as turnout runs here
    return ServerProcess("litellm", [str(binary), "--config", str(config), "--port", str(port),
                                     "--host", "127.0.0.1", "--num_workers", "1", "--log_config", str(quiet)], port,
                         ready_path="/health/liveliness", env=env,
                         log_path=log_dir / "litellm.log" if log_dir else None)


def _tree(pid: int) -> list[int]:
    pids, index = [pid], 0
    while index < len(pids):
        for task in Path(f"/proc/{pids[index]}/task").glob("*"):
            with contextlib.suppress(OSError):
                pids += [int(child) for child in (task / "children").read_text().split()]
        index += 1
    return pids


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
