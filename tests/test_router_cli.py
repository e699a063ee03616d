"""`turnout router ...` end to end: files in, files out, clear errors; plus loading outcome data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from router_models import WEIGHTS_DIR, load_router
from router_models.alpacaeval import JUDGE_FILES
from router_models.cli import register
from router_models.data import load_outcomes
from router_models.transfer import shipped_router_names

MMLU_DIR = Path("/work/shared/data/routellm/mmlu")

# A synthetic outcome set with a learnable rule: multi-step arithmetic needs the strong model.
EASY = ["What colour is the sky?", "Name a fruit.", "Say hello.", "What is the opposite of hot?",
        "Which animal barks?", "Spell cat."]
HARD = ["If 17 workers build 3.5 walls in 12 days, how many days do 42 workers need for 9 walls? Show steps.",
        "Compute 48*37 - 19^2 + 1024/16, then explain each step of the calculation in detail.",
        "A train leaves at 14:05 at 83 km/h; another at 15:20 at 117 km/h. When does the second catch up?",
        "Solve for x: 3x^2 - 12x + 7 = 0, and give both roots to three decimals with a derivation.",
        "A tank fills at 12 L/min and drains at 7.5 L/min; it holds 900 L. How long from 150 L to full?",
        "Find the sum of all multiples of 3 or 5 below 1000 and explain the inclusion-exclusion step."]


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="turnout")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def synthetic_outcomes(tmp_path: Path) -> Path:
    rows = []
    for i in range(4):  # four groups, each with easy rows (both right) and hard rows (only strong right)
        for prompts, weak in ((EASY, True), (HARD, False)):
            rows += [{"prompt": f"{p} (set {i})", "weak": weak, "strong": True, "subject": f"s{i}"}
                     for p in prompts]
    return write_jsonl(tmp_path / "outcomes.jsonl", rows)


@pytest.mark.parametrize("router", ["length", "default"])
def test_score_round_trip_keeps_objects_and_adds_scores(tmp_path: Path, router: str) -> None:
    rows = [{"prompt": p, "id": i} for i, p in enumerate(EASY + HARD)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    target = tmp_path / "out" / "scores.jsonl"
    assert run_cli("router", "score", "--input", str(source), "--output", str(target), "--router", router,
                   "--batch-size", "5") == 0
    scored = read_jsonl(target)
    assert [{k: v for k, v in r.items() if k != "score"} for r in scored] == rows
    scores = np.array([r["score"] for r in scored])
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scores, load_router(router).score([r["prompt"] for r in rows]), atol=1e-6)


@pytest.mark.parametrize("turns", ["conversation", "last"])
def test_chats_score_as_the_gateway_routes_them(tmp_path: Path, turns: str) -> None:
    question, follow_up = "word " * 300, "why?"
    chats = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": question},
                           {"role": "assistant", "content": "ok"},
                           {"role": "user", "content": [{"type": "text", "text": follow_up}]}]},
             {"prompt": follow_up}]
    source, target = write_jsonl(tmp_path / "in.jsonl", chats), tmp_path / "out.jsonl"
    assert run_cli("router", "score", "--input", str(source), "--output", str(target), "--router", "length",
                   "--turns", turns) == 0
    long_score, short_score = load_router("length").score([question, follow_up])
    expected = [long_score if turns == "conversation" else short_score, short_score]
    np.testing.assert_allclose([r["score"] for r in read_jsonl(target)], expected)


@pytest.mark.parametrize(("content", "message"), [
    ('{"prompt": "ok"}\n{not json\n', "in.jsonl:2: not valid JSON"),
    ('{"prompt": "ok"}\n\n{"text": "no prompt"}\n', 'in.jsonl:3: expected an object with a string "prompt"'),
    ('{"messages": [{"role": "assistant", "content": "hi"}]}\n', 'or a "messages" list with a user turn'),
    ('{"messages": ["hi"]}\n', 'in.jsonl:1: expected an object'),
    ('["a list"]\n', 'in.jsonl:1: expected an object'),
    ("", "no prompts"),
])
def test_score_reports_bad_input_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture, content: str,
                                               message: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(content, encoding="utf-8")
    assert run_cli("router", "score", "--input", str(source), "--output", str(tmp_path / "o.jsonl"),
                   "--router", "length") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_unknown_router_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    assert run_cli("router", "calibrate", "--strong-fraction", "0.5", "--prompts", str(source),
                   "--router", "no-such-router") == 2
    assert "unknown router 'no-such-router'" in capsys.readouterr().err


def test_calibrate_prints_a_threshold_for_the_fraction(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prompts = [{"prompt": "word " * n} for n in range(1, 101)]
    source = write_jsonl(tmp_path / "sample.jsonl", prompts)
    assert run_cli("router", "calibrate", "--strong-fraction", "0.3", "--prompts", str(source),
                   "--router", "length") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["achieved_fraction"] == pytest.approx(0.3)
    scores = load_router("length").score([p["prompt"] for p in prompts])
    assert (scores >= result["threshold"]).mean() == pytest.approx(0.3)


def test_train_then_score_and_eval_with_the_trained_file(synthetic_outcomes: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "head.npz"
    cache = str(tmp_path / "cache")
    assert run_cli("router", "train", "--data", str(synthetic_outcomes), "--out", str(weights),
                   "--folds", "2", "--cache-dir", cache) == 0
    assert (tmp_path / "cache" / "embeddings").is_dir()
    out = capsys.readouterr().out
    assert "group-held-out CV" in out and "wrote" in out
    router = load_router(str(weights))
    hard, easy = router.score(["Compute 23*19 + 7^3 - 88/11 and explain every step.", "Say goodbye."])
    assert hard > easy
    assert router.threshold_for_fraction(0.5) == pytest.approx(np.median(router.score(
        [r["prompt"] for r in read_jsonl(synthetic_outcomes)])), abs=0.05)

    plot = tmp_path / "curve.png"
    pytest.importorskip("matplotlib")
    assert run_cli("router", "eval", "--data", str(synthetic_outcomes), "--router", str(weights),
                   "--plot", str(plot), "--cache-dir", cache) == 0
    out = capsys.readouterr().out
    assert "†" in out and "group-held-out" in out and "APGR" in out  # its own training data: CV, not in-sample
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_rejects_unknown_excluded_group(synthetic_outcomes: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    assert run_cli("router", "train", "--data", str(synthetic_outcomes), "--out", str(tmp_path / "h.npz"),
                   "--exclude-groups", "nope", "--folds", "0") == 2
    assert "no such group" in capsys.readouterr().err


def test_outcome_columns_are_detected_from_a_csv(tmp_path: Path) -> None:
    csv = tmp_path / "chat.csv"
    csv.write_text("prompt,model_a,model_b\nhi,0.2,0.9\nhello,0.4,0.7\n", encoding="utf-8")
    data = load_outcomes(csv)
    assert (data.weak_column, data.strong_column) == ("model_a", "model_b")
    np.testing.assert_allclose(data.strong, [0.9, 0.7])
    assert set(data.groups) == {"chat"}


def test_ambiguous_columns_must_be_named(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("prompt,a,b,c\nhi,1,0,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="name them explicitly"):
        load_outcomes(csv)
    assert load_outcomes(csv, weak_column="b", strong_column="c").strong_column == "c"


@pytest.mark.skipif(not MMLU_DIR.is_dir(), reason="RouteLLM MMLU outcome data not present")
def test_routellm_mmlu_loads_without_contaminated_prompts() -> None:
    data = load_outcomes(MMLU_DIR)
    assert len(data) == 14042 - 5 and len(set(data.groups)) == 57
    assert data.weak_column.startswith("mistralai/") and data.strong_column == "gpt-4-1106-preview"
    assert data.strong.mean() > data.weak.mean()


# --- several sets at once, AlpacaEval conversion, validation-only data ----------------------------

def chat_outcomes(path: Path, extra: dict | None = None) -> Path:
    """A tiny AlpacaEval-shaped set (weak_quality/strong_quality, a dataset column): the strong answer wins the
    long asks, the short ones are ties."""
    rows = [{"prompt": p, "dataset": "chat", "weak_quality": 0.5, "strong_quality": 0.5, **(extra or {})}
            for p in EASY]  # a tie
    rows += [{"prompt": p, "dataset": "chat", "weak_quality": 0.0, "strong_quality": 1.0, **(extra or {})}
             for p in HARD]
    return write_jsonl(path, rows)


def test_eval_prints_every_router_on_every_set(synthetic_outcomes: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "features.npz"
    assert run_cli("router", "train", "--data", str(synthetic_outcomes), "--out", str(weights),
                   "--inputs", "features", "--folds", "2") == 0
    chat = chat_outcomes(tmp_path / "chat.jsonl")
    capsys.readouterr()
    assert run_cli("router", "eval", "--data", f"mine={synthetic_outcomes}", "--data", str(chat),
                   "--router", str(weights), "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["sets"]) == ["mine", "chat"] and result["sets"]["chat"]["prompts"] == 12
    head = str(weights)  # rows are named as the routers were asked for
    assert list(result["routers"]) == [head, "random", "length"]
    assert result["routers"][head]["mine"]["basis"] == "cv"  # its training set: held out, never in-sample
    assert result["routers"][head]["chat"]["basis"] == "scored"
    assert result["routers"]["length"]["chat"]["apgr"] == pytest.approx(0.75)  # perfect: every long ask first
    (selection,) = result["selection"]
    assert selection["router"] == head and set(selection["margins"]) == {"mine", "chat"}
    assert selection["passes"] == (selection["worst_margin"] > 0)

    assert run_cli("router", "eval", "--data", str(synthetic_outcomes), "--data", str(chat),
                   "--router", str(weights)) == 0
    out = capsys.readouterr().out
    assert "outcomes" in out and "chat" in out and "†" in out and "beats random & length" in out


def test_shipped_routers_are_the_head_files_only() -> None:
    assert shipped_router_names(WEIGHTS_DIR) == ["default", "embedding"]  # not token_counts.npz


@pytest.mark.parametrize(("content", "message"), [
    (b"", "no outcome rows"),
    (b'{"prompt": "hi", "weak_quality": 1}\n', "no strong model quality column"),
    (b'{"prompt": "hi", "weak_quality": 1, "strong_quality": 0}\n{"prompt": "yo", "weak_quality": 1}\n',
     ":2: missing 'strong_quality'"),
    (b'{"weak_quality": 1, "strong_quality": 0}\n', ":1: missing 'prompt'"),
    (b"\xff\xfe not text\n", "cannot read: not UTF-8"),
    (b'[1, 2]\n', "expected a JSON object"),
])
def test_eval_reports_bad_outcome_files_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    content: bytes, message: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    good = chat_outcomes(tmp_path / "good.jsonl")
    assert run_cli("router", "eval", "--data", str(good), "--data", str(bad), "--router", "length") == 2
    err = capsys.readouterr().err
    assert message in err and str(bad) in err and err.count("\n") == 1


def test_eval_rejects_a_missing_file_and_a_plot_of_several_sets(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    good = chat_outcomes(tmp_path / "good.jsonl")
    assert run_cli("router", "eval", "--data", str(tmp_path / "nope.jsonl"), "--router", "length") == 2
    assert "no such file" in capsys.readouterr().err
    assert run_cli("router", "eval", "--data", str(good), "--data", str(good), "--router", "length",
                   "--plot", str(tmp_path / "x.png")) == 2
    assert "single --data" in capsys.readouterr().err


def alpacaeval_folder(folder: Path) -> Path:
    folder.mkdir()
    for judge, file in JUDGE_FILES.items():
        chat_outcomes(folder / file)
        if judge == 2:  # the second judge disagrees on one prompt
            rows = read_jsonl(folder / file)
            rows[0].update(weak_quality=1.0, strong_quality=0.0)
            write_jsonl(folder / file, rows)
    return folder


def test_from_alpacaeval_marks_rows_validation_only_and_train_refuses_them(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = alpacaeval_folder(tmp_path / "alpacaeval")
    out = tmp_path / "j2.jsonl"
    assert run_cli("router", "from-alpacaeval", str(folder), "--judge", "2", "--out", str(out)) == 0
    assert "CC-BY-NC-4.0" in capsys.readouterr().err
    rows = read_jsonl(out)
    assert len(rows) == 12 and rows[0]["weak_quality"] == 1.0
    assert all(r["license"] == "CC-BY-NC-4.0" and r["use"] == "validation" for r in rows)
    data = load_outcomes(out)
    assert data.validation_only and data.licenses == ("CC-BY-NC-4.0",)
    assert (data.weak_column, data.strong_column) == ("weak_quality", "strong_quality")

    weights = tmp_path / "h.npz"
    train = ("router", "train", "--data", str(out), "--out", str(weights), "--inputs", "features", "--folds", "0")
    assert run_cli(*train) == 2
    assert "validation" in capsys.readouterr().err and not weights.exists()
    assert run_cli(*train, "--allow-validation-data") == 0  # explicit, for local experiments
    assert load_router(str(weights)).head.meta["trained_on_validation_data"] is True

    assert run_cli("router", "eval", "--data", str(out), "--router", "length") == 0  # evaluating is the point


@pytest.mark.parametrize(("setup", "message"), [
    ("no folder", "no such folder"),
    ("no file", "no mixtral_vs_gpt4_1106_gpt4_turbo_fn.jsonl"),
    ("empty", "no rows"),
    ("missing field", ":1: missing 'strong_quality'"),
])
def test_from_alpacaeval_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture, setup: str,
                                           message: str) -> None:
    folder = tmp_path / "a"
    if setup != "no folder":
        folder.mkdir()
    file = folder / JUDGE_FILES[1]
    if setup == "empty":
        file.write_text("\n", encoding="utf-8")
    elif setup == "missing field":
        write_jsonl(file, [{"prompt": "hi", "weak_quality": 1.0}])
    out = tmp_path / "out.jsonl"
    assert run_cli("router", "from-alpacaeval", str(folder), "--judge", "1", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_surprisal_router_ranks_gibberish_above_plain_english(tiny_model: str, tmp_path: Path) -> None:
    from engine.loader import load_model
    from engine.store import resolve
    from router_models.surprisal import SurprisalEncoder, SurprisalRouter

    loaded = load_model(tiny_model, resolve(tiny_model, progress=False), device="cpu")
    router = SurprisalRouter(SurprisalEncoder(tiny_model, loaded=loaded), cache_dir=tmp_path)
    prompts = ["What is the capital of France?", "zxq vlorp 93kk ;; qqj wub florn xx?", "Hi"]
    scores = router.score(prompts)
    assert scores.shape == (3,) and np.all((scores > 0) & (scores < 1))
    assert scores[1] > scores[0]
    alone = router.encoder.embed([prompts[0]])[0, 0]  # batching and padding do not change a prompt's value
    assert router.surprisal([prompts[0]])[0] == pytest.approx(alone, rel=1e-3)
    assert (tmp_path / "embeddings" / f"{router.encoder.name}.npz").is_file()  # cached for the next run
