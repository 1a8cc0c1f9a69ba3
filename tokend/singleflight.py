"""One task per key: whoever asks for a key while its task runs awaits that same task
(a vend's refresh, an application token's renewal, an eBay public-key lookup)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: dict[str, asyncio.Task[T]] = {}

    def running(self, key: str) -> bool:
        return key in self._tasks

    async def run(self, key: str, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The result of `key`'s task, started with `start()` unless one is running."""
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(start(), name=f"{self._name}:{key}")
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        # A caller that goes away must not cancel the task the others wait for.
        return await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited is not reported
