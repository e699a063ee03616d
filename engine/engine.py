"""Engine facade: one loaded model, a continuous-batching scheduler thread, an async streaming API.

The engine knows nothing of HTTP: the gateway's embedded backend and benchmarks call `generate`.
Nor does it know any drafter: whoever builds an engine that speculates hands it a `DrafterFactory`
(engine/drafting.py; drafters.build.build_drafter), so the arrows go from drafters/ to engine/ only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from engine.detok import IncrementalDetokenizer, StopStringFilter
from engine.drafting import DrafterFactory
from engine.loader import DEFAULT_MAX_CONTEXT, LOAD_LOCK, LoadedModel, load_model
from engine.prefix_cache import PrefixCache
from engine.runner import ModelRunner
from engine.sampling import make_generator
from engine.scheduler import Scheduler
from engine.sequence import Sequence
from engine.speculative import SpeculativeConfig
from engine.types import DEFAULT_PREFIX_CACHE_MB, Delta, EngineError, InvalidRequest, SamplingParams


class Engine:
    def __init__(self, loaded: LoadedModel, *, max_batch_size: int = 8, max_waiting: int = 64,
                 threads: int | None = None, speculative: SpeculativeConfig | None = None,
                 drafters: DrafterFactory | None = None, progress: bool = True,
                 prefix_cache_mb: float = DEFAULT_PREFIX_CACHE_MB):
        """`prefix_cache_mb`: memory for reusable prompt KV (engine/prefix_cache.py), as much again for the
        draft model's; 0 turns prefix caching off. `threads`: torch threads per step; None shares the cores
        among the process's engines with work (engine/cpu_share.py). `drafters` builds the drafter that
        `speculative` asks for (a method other than none needs it); `progress` shows a draft model's pull."""
        self.loaded = loaded
        self.speculative = speculative or SpeculativeConfig()
        if self.speculative.enabled and drafters is None:
            raise ValueError(f"speculative method {self.speculative.method!r} needs a drafter factory "
                             "(drafters.build.build_drafter)")
        drafter = drafters(self.speculative, loaded, progress=progress,
                           prefix_cache_mb=prefix_cache_mb) if drafters is not None else None
        self.model_id = loaded.model_id
        self.context_length = loaded.context_length
        self.tokenizer = loaded.tokenizer
        self.prefix_cache = PrefixCache.of_megabytes(prefix_cache_mb)
        self.scheduler = Scheduler(
            ModelRunner(loaded), max_batch_size=max_batch_size, max_waiting=max_waiting,
            threads=threads, drafter=drafter,
            max_speculative_batch=self.speculative.max_batch, prefix_cache=self.prefix_cache,
        )

    @classmethod
    def load(cls, name_or_path: str, *, max_batch_size: int = 8, max_waiting: int = 64,
             device: str | None = None, max_context: int = DEFAULT_MAX_CONTEXT, progress: bool = True,
             weights: str = "fp32", **scheduler_options: Any) -> Engine:
        """Blocking: resolve (pulling a built-in model, and converting it to `weights`, if needed) and load;
        start the scheduler thread.
        Engines load one at a time (LOAD_LOCK): transformers loading is not thread-safe, and two pulls'
        progress bars cannot share the terminal."""
        from engine.store import resolve

        with LOAD_LOCK:
            location = resolve(name_or_path, progress=progress, weights=weights)
            loaded = load_model(name_or_path, location, device=device, max_context=max_context, pack=True)
            return cls(loaded, max_batch_size=max_batch_size, max_waiting=max_waiting, progress=progress,
                       **scheduler_options)

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Apply the tokenizer's chat template (with the generation prompt)."""
        if not messages:
            raise InvalidRequest("messages must contain at least one message", "messages")
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # templates raise on roles/orders they do not support
            raise InvalidRequest(f"messages rejected by the chat template: {exc}", "messages") from exc
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)  # encode() is decorated untyped
        return ids

    def encode_prompt(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(text)
        return ids

    async def generate(self, prompt_ids: list[int], params: SamplingParams, *, speculative: bool = True,
                       reference_ids: list[int] | None = None, cache_scope: str = "") -> AsyncIterator[Delta]:
        """Stream Deltas. Raises EngineOverloaded or InvalidRequest before the first delta.
        Closing or cancelling the iterator frees the sequence's batch slot at the next step.
        `reference_ids`: a likely answer (e.g. a cached response to a similar prompt) that the
        n-gram drafter may copy from; it only changes speed, never the output. `cache_scope`: whose
        earlier prompts' KV this one may reuse (the gateway passes the tenant)."""
        params.validate()
        if not prompt_ids:
            raise InvalidRequest("prompt must not be empty", "prompt")
        room = self.context_length - len(prompt_ids)
        if room < 1:
            raise InvalidRequest(
                f"prompt is {len(prompt_ids)} tokens; this model's context is {self.context_length} tokens",
                "messages",
            )
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[Delta] = asyncio.Queue()

        def emit(delta: Delta) -> None:
            try:
                loop.call_soon_threadsafe(deltas.put_nowait, delta)
            except RuntimeError:  # the caller's loop is gone: stop generating for it
                seq.cancelled = True

        seq = Sequence(
            prompt_ids=list(prompt_ids),
            params=params,
            max_new_tokens=min(params.max_tokens, room),
            emit=emit,
            generator=make_generator(params.seed),
            detokenizer=IncrementalDetokenizer(self.tokenizer),
            stop_filter=StopStringFilter(tuple(params.stop)),
            eos_token_ids=self.loaded.eos_token_ids,
            speculative=speculative,
            reference_ids=list(reference_ids or []),
            cache_scope=cache_scope,
            draft_start_k=self.speculative.num_speculative_tokens,
            draft_k_max=self.speculative.max_speculative_tokens,
        )
        self.scheduler.submit(seq)
        try:
            while True:
                delta = await deltas.get()
                if delta.finish_reason == "abort":
                    raise EngineError("the engine failed while generating; see the server log")
                yield delta
                if delta.finish_reason is not None:
                    return
        finally:
            if not seq.finished:
                seq.cancelled = True
                self.scheduler.wake()

    def close(self) -> None:
        self.scheduler.stop()
