"""HangUp: the client's disconnect cancels the work of its request, and only that."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.api.hangup import HangUp


class FakeRequest:
    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.messages.get()


async def test_disconnect_cancels_the_work_and_is_reported() -> None:
    request = FakeRequest()
    reached_the_end = False
    hangup = HangUp(request, grace_s=0)  # type: ignore[arg-type]
    with hangup:
        await asyncio.sleep(0)  # let the listener start
        request.messages.put_nowait({"type": "http.disconnect"})
        await asyncio.Event().wait()  # a generation that never ends
        reached_the_end = True
    assert hangup.happened and not reached_the_end
    await asyncio.sleep(0)  # the task is usable afterwards: no cancellation left pending


async def test_work_that_ends_first_is_left_alone() -> None:
    request = FakeRequest()
    hangup = HangUp(request, grace_s=0)  # type: ignore[arg-type]
    with hangup:
        await asyncio.sleep(0)
    request.messages.put_nowait({"type": "http.disconnect"})
    await asyncio.sleep(0.01)
    assert not hangup.happened


async def test_no_listener_before_the_grace_period() -> None:
    request = FakeRequest()
    request.messages.put_nowait({"type": "http.disconnect"})
    hangup = HangUp(request, grace_s=3600)  # type: ignore[arg-type]
    with hangup:
        await asyncio.sleep(0.01)
    assert not hangup.happened and request.messages.qsize() == 1


async def test_a_cancellation_from_elsewhere_propagates() -> None:
    async def handler() -> None:
        with HangUp(FakeRequest(), grace_s=0):  # type: ignore[arg-type]
            await asyncio.Event().wait()

    task = asyncio.ensure_future(handler())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
