"""Continuous batching: one thread owns the model and steps every running sequence together.

New requests are prefilled alone and join the running batch between decode steps; finished and
cancelled ones leave between steps (nano-vllm's shape, with HF models underneath). The waiting
queue is bounded so overload is refused at once instead of queueing without limit.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

import torch

from engine.cpu_share import CPU_SHARE, CpuShare
from engine.drafting import EMPTY, Draft, Drafter
from engine.kv import BatchKV, cache_layers
from engine.prefix_cache import NO_MATCH, PrefixCache
from engine.runner import ModelRunner
from engine.sampling import sample, token_logprobs
from engine.sequence import Sequence
from engine.types import EngineOverloaded
from engine.verify import verify

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, runner: ModelRunner, *, max_batch_size: int = 8, max_waiting: int = 64,
                 threads: int | None = None, cpu: CpuShare = CPU_SHARE,
                 drafter: Drafter | None = None, max_speculative_batch: int = 4,
                 prefix_cache: PrefixCache | None = None):
        self.runner = runner
        self.prefix_cache = prefix_cache
        self.drafter = drafter
        self.max_speculative_batch = max_speculative_batch
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        self.threads = threads  # None: the cores `cpu` shares among the engines with work (engine/cpu_share.py)
        self.cpu = cpu
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.kv = BatchKV()
        self.steps = 0
        self._wakeup = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="turnout-engine", daemon=True)
        self._thread.start()

    def submit(self, seq: Sequence) -> None:
        with self._wakeup:
            if len(self.waiting) >= self.max_waiting:
                raise EngineOverloaded(f"engine queue is full ({self.max_waiting} waiting); retry later")
            self.waiting.append(seq)
            self._wakeup.notify()

    def wake(self) -> None:
        """Called when a sequence is cancelled so an idle loop notices."""
        with self._wakeup:
            self._wakeup.notify()

    def stop(self) -> None:
        with self._wakeup:
            self._stopped = True
            self._wakeup.notify()
        self._thread.join(timeout=30)

    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.running)

    def _loop(self) -> None:
        with torch.inference_mode():
            self._serve_forever()

    def _serve_forever(self) -> None:
        while True:
            with self._wakeup:
                if self._stopped or not (self.waiting or self.running):
                    self.cpu.idle(self)
                while not self._stopped and not self.waiting and not self.running:
                    self._wakeup.wait()
                if self._stopped:
                    return
            self.cpu.busy(self)
            torch.set_num_threads(self.threads or self.cpu.threads())
            try:
                self._admit()
                if self.running:
                    self._decode()
            except Exception:  # a bug must not leave clients hanging: fail every running sequence
                log.exception("engine step failed")
                self._fail_all()

    def _admit(self) -> None:
        while len(self.running) < self.max_batch_size:
            with self._wakeup:
                if not self.waiting:
                    return
                seq = self.waiting.popleft()
            if seq.cancelled:
                continue
            prefix = NO_MATCH if self.prefix_cache is None else self.prefix_cache.match(seq.cache_scope, seq.prompt_ids)
            logits, cache, valid = self.runner.prefill(seq.prompt_ids, prefix)
            seq.cached_tokens = prefix.tokens
            if self.prefix_cache is not None:  # now, so requests arriving while this one runs share its prompt
                self.prefix_cache.store(seq.cache_scope, seq.prompt_ids, cache_layers(cache))
            _accept(seq, [sample(logits, seq.params, seq.generator)], logits[None])
            if not seq.finished:
                self.kv.append_row(cache, valid)
                self.running.append(seq)

    def _decode(self) -> None:
        drafts = [self._draft(seq) for seq in self.running]
        fed = [[_pending(seq), *draft.tokens] for seq, draft in zip(self.running, drafts, strict=True)]
        logits = self.runner.step(self.kv, fed)
        for row, (seq, draft, row_logits) in enumerate(zip(self.running, drafts, logits, strict=True)):
            if seq.cancelled:
                continue
            if not draft.tokens:
                _accept(seq, [sample(row_logits[-1], seq.params, seq.generator)], row_logits[-1:])
                continue
            accepted, token = verify(row_logits, draft, seq.params, seq.generator)
            self.kv.invalidate_tail(row, len(draft.tokens) - accepted)
            seq.record_speculation(draft.source, len(draft.tokens), accepted)
            _accept(seq, draft.tokens[:accepted] + [token], row_logits[: accepted + 1])
        self.steps += 1
        self.kv.compact()
        self._retire()

    def _draft(self, seq: Sequence) -> Draft:
        """Drafts only pay while the batch is small: a large batch already amortises the weights."""
        if not (self.drafter and seq.speculative) or len(self.running) > self.max_speculative_batch:
            return EMPTY
        limit = min(seq.draft_k_max, seq.remaining - 1)
        return self.drafter.propose(seq, limit, greedy=seq.params.greedy) if limit > 0 else EMPTY

    def _retire(self) -> None:
        keep = [i for i, seq in enumerate(self.running) if not (seq.finished or seq.cancelled)]
        if len(keep) != len(self.running):
            for row, seq in enumerate(self.running):
                if not (seq.finished or seq.cancelled):
                    continue
                if self.prefix_cache is not None:
                    self._remember(row, seq)
                if self.drafter:
                    self.drafter.release(seq)
            self.running = [self.running[i] for i in keep]
            self.kv.keep_rows(keep)

    def _remember(self, row: int, seq: Sequence) -> None:
        """Keep a leaving sequence's prompt and answer for the prefix cache: a chat's next turn starts
        with both. Rejected drafts are not valid positions; tokens fed after an end of sequence that the
        answer dropped are cut off by the length."""
        assert self.prefix_cache is not None
        tokens = min(int(self.kv.valid[row].sum()), len(seq.all_ids))
        self.prefix_cache.store(seq.cache_scope, seq.all_ids[:tokens], self.kv.row_layers(row, tokens))

    def _fail_all(self) -> None:
        for seq in self.running:
            seq.finish_reason = "abort"
            seq.accept([])
        self.running = []
        self.kv = BatchKV()


def _accept(seq: Sequence, tokens: list[int], logits: torch.Tensor) -> None:
    """Hand the sequence its new tokens; row i of `logits` is the distribution tokens[i] was chosen from
    (for logprobs, when the request asked for them)."""
    seq.accept(tokens, token_logprobs(logits, tokens, seq.params.top_logprobs))


def _pending(seq: Sequence) -> int:
    """The token a running sequence feeds next: it joins the batch with one sampled at its prefill, and
    every step samples the next."""
    assert seq.next_token is not None
    return seq.next_token
