"""Speculative decoding never changes the output: greedy is token-identical with drafts on and off,
and sampling keeps the target's distribution (rejection sampling)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import numpy as np
import pytest
import torch

from bench.spec.replay import Replayed
from drafters import vocab
from drafters.model import ModelDrafter
from drafters.ngram import NgramDrafter
from engine.adaptive import AdaptiveK
from engine.drafting import Draft, DraftContext
from engine.engine import Engine
from engine.loader import load_model
from engine.sampling import make_generator, probabilities
from engine.smoothquant import CALIBRATION_TEXT, input_maxima, smooth
from engine.speculative import SpeculativeConfig
from engine.store import resolve
from engine.types import SamplingParams
from engine.verify import verify

MODEL = "smollm2-135m-instruct"
GREEDY = SamplingParams(max_tokens=40, temperature=0.0)
PROMPTS = [
    "Repeat exactly: the quick brown fox jumps over the lazy dog, the quick brown fox jumps over the lazy dog.",
    "Rename the variable x to count in: def f(x):\n    return x + x * 2\n",
    "What is the capital of France?",
    "Write a haiku about the sea.",
]


class RandomDrafter:
    """A deliberately bad drafter: random tokens, so nearly every draft is rejected and rolled back."""

    name = "random"
    cost = 0.0

    def __init__(self, vocab: int):
        self.vocab = vocab
        self.rng = random.Random(0)

    def propose(self, seq: DraftContext, k: int, *, greedy: bool) -> Draft:
        k = min(k, seq.draft_k(self.name, self.cost))
        return Draft(tokens=[self.rng.randrange(self.vocab) for _ in range(k)], source=self.name)

    def release(self, seq: DraftContext) -> None:
        pass


@pytest.fixture(scope="module")
def loaded():
    return load_model(MODEL, resolve(MODEL, progress=False), pack=True)  # as Engine.load serves it


@pytest.fixture(scope="module")
def plain(loaded):
    engine = Engine(loaded, max_batch_size=4)
    yield engine
    engine.close()


def engine_with(loaded, drafter, k: int = 4) -> Engine:
    engine = Engine(loaded, max_batch_size=4, speculative=SpeculativeConfig(num_speculative_tokens=k))
    engine.scheduler.drafter = drafter
    return engine


async def run(engine: Engine, prompt: str, params: SamplingParams = GREEDY, **options):
    ids = engine.encode_chat([{"role": "user", "content": prompt}])
    deltas = [d async for d in engine.generate(ids, params, **options)]
    return [t for d in deltas for t in d.token_ids], deltas[-1]


async def run_all(loaded, drafter):
    """Every prompt, one at a time, through an engine that drafts with `drafter`."""
    engine = engine_with(loaded, drafter)
    try:
        return [await run(engine, prompt) for prompt in PROMPTS]
    finally:
        engine.close()


@pytest.fixture(scope="module")
def reference(plain):
    return [asyncio.run(run(plain, prompt))[0] for prompt in PROMPTS]


def make_drafter(name: str, loaded):
    vocab = loaded.model.config.vocab_size
    if name == "ngram":
        return NgramDrafter()
    if name == "random":
        return RandomDrafter(vocab)
    draft = load_model(MODEL, resolve(MODEL, progress=False))  # int8 copy: close to, not equal to, the target
    return ModelDrafter(draft, target=loaded.model, int8=True)


@pytest.mark.parametrize("name", ["ngram", "random", "draft_model"])
async def test_greedy_output_is_identical_with_speculation(loaded, reference, name):
    outputs = await run_all(loaded, make_drafter(name, loaded))
    assert [tokens for tokens, _ in outputs] == reference
    spec = [final.spec for _, final in outputs if final.spec]
    assert spec, "the drafter was never used"
    assert sum(s.num_draft_tokens for s in spec) > 0
    if name == "random":
        assert sum(s.num_accepted_tokens for s in spec) < sum(s.num_draft_tokens for s in spec)


async def test_logprobs_are_the_same_with_speculation(loaded, plain):
    """Per-token logprobs come from the verifying pass's rows: with a random drafter (rejections, rollbacks)
    they equal plain decoding's, one per token, and greedy's choice is each position's likeliest token."""
    params = SamplingParams(max_tokens=24, temperature=0.0, top_logprobs=3)
    engine = engine_with(loaded, RandomDrafter(loaded.model.config.vocab_size))
    try:
        runs = []
        for generator in (plain, engine):
            ids = generator.encode_chat([{"role": "user", "content": PROMPTS[0]}])
            deltas = [d async for d in generator.generate(ids, params)]
            runs.append(([t for d in deltas for t in d.token_ids], [lp for d in deltas for lp in d.logprobs or []],
                         deltas[-1].spec))
    finally:
        engine.close()
    (tokens, logprobs, _), (spec_tokens, spec_logprobs, spec) = runs
    assert spec is not None and spec.num_draft_tokens > 0
    assert tokens == spec_tokens and [lp.token_id for lp in logprobs] == tokens == [lp.token_id for lp in spec_logprobs]
    for plain_lp, spec_lp in zip(logprobs, spec_logprobs, strict=True):
        assert len(plain_lp.top) == 3 and plain_lp.top[0][0] == plain_lp.token_id
        assert spec_lp.logprob == pytest.approx(plain_lp.logprob, abs=1e-3)
        assert [i for i, _ in spec_lp.top] == [i for i, _ in plain_lp.top]


async def test_draft_over_frequent_tokens_only_keeps_the_output(loaded, reference, tmp_path, monkeypatch):
    """FR-Spec: the draft's head keeps 1,024 frequent tokens; whatever else the target wants, it supplies."""
    counts = Counter(token for prompt in PROMPTS for token in loaded.tokenizer.encode(prompt))
    ranked = [token for token, _ in counts.most_common()]
    ranked += [token for token in range(2048) if token not in counts]
    monkeypatch.setattr(vocab, "RANKS_DIR", tmp_path)
    np.save(tmp_path / f"{vocab.vocabulary_hash(loaded.tokenizer)}.npy", np.array(ranked[:1024]))
    draft = load_model(MODEL, resolve(MODEL, progress=False))
    drafter = ModelDrafter(draft, target=loaded.model, int8=True, vocab=1024)
    assert drafter.kept_tokens is not None and len(drafter.kept_tokens) < 1100
    outputs = await run_all(loaded, drafter)
    assert [tokens for tokens, _ in outputs] == reference
    assert sum(final.spec.num_accepted_tokens for _, final in outputs if final.spec) > 0


def test_smoothing_leaves_the_fp32_model_unchanged():
    """SmoothQuant's scales are folded into the neighbouring weights: the same function before int8."""
    draft = load_model(MODEL, resolve(MODEL, progress=False))
    ids = torch.tensor([draft.tokenizer.encode("Smoothing moves activation outliers into the weights.")])
    with torch.inference_mode():
        before = draft.model(input_ids=ids).logits
    calibration = draft.tokenizer.encode(CALIBRATION_TEXT.read_text())[:256]
    smooth(draft.model, input_maxima(draft.model, calibration))
    with torch.inference_mode():
        after = draft.model(input_ids=ids).logits
    assert torch.equal(before.argmax(-1), after.argmax(-1))
    assert torch.allclose(before, after, atol=2e-3, rtol=1e-3)


async def test_batched_speculation_equals_unbatched(loaded, reference):
    engine = engine_with(loaded, NgramDrafter())
    try:
        together = await asyncio.gather(*(run(engine, prompt) for prompt in PROMPTS))
    finally:
        engine.close()
    assert [tokens for tokens, _ in together] == reference


async def test_speculation_can_be_switched_off_per_request(loaded, reference):
    engine = engine_with(loaded, NgramDrafter())
    try:
        tokens, final = await run(engine, PROMPTS[0], speculative=False)
    finally:
        engine.close()
    assert tokens == reference[0]
    assert final.spec is None


async def test_reference_answer_is_accepted_in_long_runs(loaded, plain, reference):
    """A cached answer to a near-duplicate prompt makes a near-perfect draft (retrieval drafting)."""
    engine = engine_with(loaded, NgramDrafter(), k=8)
    try:
        tokens, final = await run(engine, PROMPTS[3], reference_ids=reference[3])
    finally:
        engine.close()
    assert tokens == reference[3]
    assert final.spec.num_accepted_tokens >= len(tokens) // 2


def empirical(samples: list[int], vocab: int) -> torch.Tensor:
    return torch.bincount(torch.tensor(samples), minlength=vocab).float() / len(samples)


def first_tokens(target_logits: torch.Tensor, draft_probs: torch.Tensor | None, params, trials: int):
    generator = make_generator(1234)
    out = []
    for _ in range(trials):
        if draft_probs is None:
            tokens = [int(torch.randint(0, target_logits.shape[-1], (1,), generator=generator))]
            draft = Draft(tokens=tokens)
        else:
            tokens = [int(torch.multinomial(draft_probs, 1, generator=generator))]
            draft = Draft(tokens=tokens, probs=draft_probs[None, :])
        accepted, token = verify(target_logits, draft, params, generator)
        out.append(tokens[0] if accepted else token)
    return out


@pytest.mark.parametrize("deterministic", [True, False])
def test_rejection_sampling_preserves_target_distribution(loaded, deterministic):
    """On the real model: the first verified token is distributed as the target's p, whatever q is."""
    params = SamplingParams(temperature=1.0, top_p=1.0)
    ids = torch.tensor([loaded.tokenizer.encode("The weather today is")])
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids).logits[0, -1]
    top = torch.topk(logits, 8).indices  # keep a small support so 20k trials measure it precisely
    target_logits = torch.full_like(logits, float("-inf"))
    target_logits[top] = logits[top]
    p = probabilities(target_logits, params)
    q = None
    if not deterministic:  # a draft that is confidently wrong about the ranking
        q = torch.zeros_like(p)
        q[top] = torch.linspace(0.02, 0.3, 8)
        q = q / q.sum()
    rows = torch.stack([target_logits, target_logits])  # position 0 verifies the draft, 1 is the bonus
    trials = 20_000
    observed = empirical(first_tokens(rows, q, params, trials), p.shape[0])[top]
    expected = p[top]
    chi2 = float((((observed - expected) ** 2) / expected).sum() * trials)
    assert chi2 < 24.3, (observed, expected)  # chi-square, 7 degrees of freedom, p = 0.001


def test_adaptive_k_drafts_long_when_cheap_and_accepted_short_when_costly_and_rejected():
    free = AdaptiveK(k=4, draft_cost=0.0)
    for _ in range(10):
        free.update(free.k, free.k)  # a near-duplicate answer: every draft accepted
    assert free.k == free.k_max
    free.update(16, 0)
    assert free.k >= 4  # a missed lookup costs only verification width, flat up to 5 tokens
    costly = AdaptiveK(k=4, draft_cost=0.5)
    for _ in range(10):
        costly.update(costly.k, 0)
    assert costly.k == 1
    assert NgramDrafter().cost == 0.0


def test_lookup_drafts_as_far_as_allowed_while_the_answer_copies_the_reference():
    reference = list(range(100, 140))
    drafter = NgramDrafter()
    seq = Replayed(prompt_ids=[1, 2, 3], reference_ids=reference, output_ids=[100])  # a context without an engine
    draft = drafter.propose(seq, 16)  # the answer starts like the cached one: copy all 16 allowed
    assert draft.tokens == reference[1:17] and draft.source == "ngram"
    seq.output_ids = reference[:17]  # all accepted, plus the target's own next token, also the reference's
    assert drafter.propose(seq, 16).tokens == reference[17:33]
    seq.output_ids = reference[:30] + [999, 131]  # diverged, then back on a one-token match
    assert drafter.propose(seq, 16).tokens == reference[32:36]  # cost-aware k (4 to start) until it copies again
    assert seq.lengths["ngram"].k == 4
