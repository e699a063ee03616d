"""`n` answers to one prompt on the embedded backend (SmolLM2-135M): a client that goes away mid-stream
frees every answer's batch slot, not only the one whose piece it was reading."""

from __future__ import annotations

import asyncio

from gateway.backends.embedded import EmbeddedBackend
from gateway.config import DeploymentConfig
from gateway.types import BackendRequest


async def test_closing_an_n_stream_frees_every_answer():
    backend = EmbeddedBackend(DeploymentConfig(kind="embedded", model="smollm2-135m-instruct", max_batch_size=4))
    await backend.start()
    try:
        request = BackendRequest(kind="chat", model="m", messages=[{"role": "user", "content": "Tell a long story."}],
                                 params={"n": 3, "max_tokens": 400, "temperature": 1.0, "seed": 1})
        events = backend.stream(request)
        await anext(events)
        for _ in range(200):  # every answer admitted and generating
            if backend.engine.scheduler.load == 3:
                break
            await asyncio.sleep(0.01)
        assert backend.engine.scheduler.load == 3
        await events.aclose()
        for _ in range(200):
            if backend.engine.scheduler.load == 0:
                break
            await asyncio.sleep(0.05)
        assert backend.engine.scheduler.load == 0
    finally:
        await backend.close()
