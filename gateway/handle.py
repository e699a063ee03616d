"""A collaborator that becomes ready after startup (the cache's Redis, the prompt encoder).

The composition root hands the handle to its users at construction and fills it in when the part is
up; users ask `get()` (None: not configured, or not ready yet) instead of having the part assigned
onto them later.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Handle(Generic[T]):
    def __init__(self, name: str, *, configured: bool = True):
        self.name = name
        self.configured = configured
        self._value: T | None = None

    def get(self) -> T | None:
        return self._value

    def set(self, value: T) -> None:
        if not self.configured:
            raise RuntimeError(f"{self.name} is not configured")
        self._value = value

    @property
    def ready(self) -> bool:
        return self._value is not None
