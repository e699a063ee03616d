"""`turnout router ...` end to end: files in, files out, clear errors; plus loading outcome data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from router_models import load_router
from router_models.cli import register
from router_models.data import load_outcomes

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
    assert "in-sample" in out and "APGR" in out
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
