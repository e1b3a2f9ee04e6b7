"""Micro-batching: requests that arrive together go through the model as one batch.

The first image of a batch waits at most ``max_wait_ms`` for others (none when ``max_batch``
is 1); images that queue while the model is busy form the next batch at once. The model runs
on one worker thread, off the event loop, so the server keeps answering (``/healthz``) while
it works. If a batch fails, its images are run one by one so that only the image that breaks
the model gets the error.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class BatchStats:
    batches: int = 0
    images: int = 0
    failures: int = 0
    largest_batch: int = 0
    in_model: int = 0  # images in the model right now
    sizes: list[int] = field(default_factory=list)  # the last 1000 batch sizes

    def record(self, size: int) -> None:
        self.batches += 1
        self.images += size
        self.largest_batch = max(self.largest_batch, size)
        self.sizes = (self.sizes + [size])[-1000:]


class Batcher:
    """``await batcher.submit(item)`` -> ``run_batch([item, ...])[i]`` for that item."""

    def __init__(self, run_batch: Callable[[list], list], *, max_batch: int, max_wait_ms: float) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, item: Any) -> Any:
        if self._task is None or self._task.done():  # started on first use, in the serving loop
            self._executor = self._executor or concurrent.futures.ThreadPoolExecutor(1, "poseseg-model")
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._serve_forever(), name="poseseg-batcher")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _serve_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._drain_into(batch)
            if len(batch) < self.max_batch and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)
                self._drain_into(batch)
            batch = [(item, fut) for item, fut in batch if not fut.done()]  # clients that went away
            if batch:
                await self._run(batch)

    def _drain_into(self, batch: list) -> None:
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    async def _run(self, batch: list) -> None:
        loop = asyncio.get_running_loop()
        items = [item for item, _ in batch]
        self.stats.in_model = len(items)
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, items)
            self.stats.record(len(items))
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
        except Exception as error:  # noqa: BLE001 - any model failure goes back to its request(s)
            if len(batch) == 1:
                self.stats.failures += 1
                if not batch[0][1].done():
                    batch[0][1].set_exception(error)
            else:
                for one in batch:  # find the image that breaks the model; the others still get answers
                    await self._run([one])
        finally:
            self.stats.in_model = 0
