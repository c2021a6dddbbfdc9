"""Dynamic micro-batching: concurrent requests share one forward pass.

A model on CPU embeds 32 texts in one call far faster than in 32 calls, so the server queues
what arrives together and runs it as one batch, up to ``max_batch`` items, waiting at most
``max_wait_s`` for company when the queue is empty.

A request larger than ``max_batch`` runs a slice at a time, its remainder queued again behind what
arrived meanwhile: requests take turns, so a bulk ingest's 256 long texts (20 s on CPU) do not hold
up a search's one query for their whole run, and no forward pass exceeds ``max_batch``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Callable, Generic, Sequence, TypeVar

from unirank.serving.metrics import ServerMetrics

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Request(Generic[Item, Result]):
    """One submitted request: its items, how many have run, and their results so far."""

    __slots__ = ("items", "done", "results", "future")

    def __init__(self, items: list[Item], future: asyncio.Future[list[Result]]) -> None:
        self.items = items
        self.done = 0
        self.results: list[Result] = []
        self.future = future

    @property
    def remaining(self) -> int:
        return len(self.items) - self.done


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
        self._queue: asyncio.Queue[_Request[Item, Result]] = asyncio.Queue()
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
        """The results for ``items``, in order, however many batches they were split over.

        Cancelling the caller cancels the request: its items still queued are dropped, not run (the
        server cancels it when the client disconnects)."""
        if not items:  # no batch would ever finish it
            return []
        self.start()
        request: _Request[Item, Result] = _Request(list(items), asyncio.get_running_loop().create_future())
        self._set_pending(len(items))
        await self._queue.put(request)
        return await request.future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if self._dropped(first):
                continue
            batch = [first]
            size = first.remaining
            # What queued up while the last batch ran goes in at once; only an idle queue waits.
            while size < self._max_batch and not self._queue.empty():
                request = self._queue.get_nowait()
                if not self._dropped(request):
                    batch.append(request)
                    size += request.remaining
            deadline = loop.time() + self._max_wait_s
            while size < self._max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
                if not self._dropped(request):
                    batch.append(request)
                    size += request.remaining
            # A request with items left goes back behind those that arrived while its slice ran.
            for request in await self._run_batch(loop, batch):
                self._queue.put_nowait(request)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop,
                         batch: list[_Request[Item, Result]]) -> list[_Request[Item, Result]]:
        """Run the next items of ``batch``'s requests, at most ``max_batch`` in all (only the last request
        can be cut short); returns the requests that still have items to run."""
        self._set_pending(-sum(r.remaining for r in batch if r.future.done()))  # cancelled: client went away
        live = [r for r in batch if not r.future.done()]
        taken: list[tuple[_Request[Item, Result], int]] = []
        room = self._max_batch
        for request in live:
            count = min(request.remaining, room)
            if count == 0:
                break
            taken.append((request, count))
            room -= count
        if not taken:
            return []
        flat = [item for request, count in taken for item in request.items[request.done:request.done + count]]
        self._set_pending(-len(flat))
        self._metrics.batch_size.labels(**self._labels).observe(len(flat))
        try:
            results = await loop.run_in_executor(self._executor, self._run, flat)
        except Exception as exc:  # every request in the batch learns of the failure
            for request, count in taken:
                request.done += count
                if not request.future.done():
                    request.future.set_exception(exc)
        else:
            self._metrics.inputs.labels(**self._labels).inc(len(flat))  # what ran: not what a client left
            start = 0
            for request, count in taken:
                request.results.extend(results[start:start + count])
                request.done += count
                start += count
                if request.remaining == 0 and not request.future.done():
                    request.future.set_result(request.results)
        # One that failed, or was cancelled while its slice ran, gets no more turns.
        self._set_pending(-sum(r.remaining for r in live if r.future.done()))
        return [r for r in live if not r.future.done()]

    def _dropped(self, request: _Request[Item, Result]) -> bool:
        """Whether ``request`` was cancelled (its client went away) while queued: its items are dropped
        unrun, and take no room in the batch being gathered."""
        if not request.future.done():
            return False
        self._set_pending(-request.remaining)
        return True

    def _set_pending(self, change: int) -> None:
        if change:
            self._pending_items += change
            self._metrics.queue_depth.labels(**self._labels).set(self._pending_items)
