"""Bounded fan-out: run one coroutine per item with at most N in flight, results in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


async def bounded(
    work: Callable[[ItemT], Awaitable[ResultT]], items: Sequence[ItemT], concurrency: int
) -> list[ResultT]:
    """A fixed pool of workers pulling from one iterator: no task per item, so 10,000 runs
    cost ``concurrency`` tasks, and the budget's FIFO order is kept."""
    results: list[ResultT | None] = [None] * len(items)
    queue = iter(enumerate(items))

    async def worker() -> None:
        for index, item in queue:
            results[index] = await work(item)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)))))
    return results  # type: ignore[return-value]
