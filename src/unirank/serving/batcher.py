"""Dynamic micro-batching: concurrent requests share one forward pass.

A model on CPU embeds 32 texts in one call far faster than in 32 calls, so the server queues
what arrives together and runs it as one batch, up to ``max_batch`` items, waiting at most
``max_wait_s`` for company when the queue is empty.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Callable, Generic, Sequence, TypeVar

from unirank.serving.metrics import ServerMetrics

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        run: Callable[[list[Item]], Sequence[Result]],
        *,
        executor: Executor,
        max_batch: int,
        max_wait_s: float,
        metrics: ServerMetrics,
        model: str,
        kind: str,
    ) -> None:
        """``run`` maps a list of items to one result each; it runs on ``executor``."""
        self._run = run
        self._executor = executor
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._metrics = metrics
        self._labels = {"model": model, "kind": kind}
        self._queue: asyncio.Queue[tuple[list[Item], asyncio.Future[list[Result]]]] = asyncio.Queue()
        self._pending_items = 0
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def submit(self, items: list[Item]) -> list[Result]:
        self.start()
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self._pending_items += len(items)
        self._metrics.queue_depth.labels(**self._labels).set(self._pending_items)
        await self._queue.put((items, future))
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            # What queued up while the last batch ran goes in at once; only an idle queue waits.
            while size < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1][0])
            deadline = loop.time() + self._max_wait_s
            while size < self._max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
                size += len(batch[-1][0])
            await self._run_batch(loop, batch, size)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop,
                         batch: list[tuple[list[Item], asyncio.Future[list[Result]]]], size: int) -> None:
        live = [(items, fut) for items, fut in batch if not fut.done()]  # drop cancelled requests
        self._pending_items -= size
        self._metrics.queue_depth.labels(**self._labels).set(self._pending_items)
        if not live:
            return
        flat = [item for items, _ in live for item in items]
        self._metrics.batch_size.labels(**self._labels).observe(len(flat))
        try:
            results = await loop.run_in_executor(self._executor, self._run, flat)
        except Exception as exc:  # every waiting request learns of the failure
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        start = 0
        for items, fut in live:
            if not fut.done():
                fut.set_result(list(results[start:start + len(items)]))
            start += len(items)
