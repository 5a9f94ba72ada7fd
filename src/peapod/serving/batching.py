"""An asyncio micro-batcher: concurrent requests of one endpoint become one batched model call.

Each endpoint owns a :class:`MicroBatcher`. A request calls :meth:`MicroBatcher.submit` and awaits
its answer. A background task takes the first waiting request, then keeps collecting until
``max_batch`` requests are in hand or ``max_wait_ms`` has passed since the first one, and runs the
batch function once on the whole list in a worker thread (the event loop stays free to accept
more requests meanwhile). Batches of all endpoints share one worker thread by default, so model
calls never run concurrently and CPU threads are not oversubscribed.

If the batch function raises, every request of that batch is retried alone, so one bad request
fails only itself and never its neighbours.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[list[T]], Sequence[R]]


@dataclass
class BatchStats:
    """Counters of one batcher (reported by the service's /health)."""

    requests: int = 0
    batches: int = 0
    max_batch_seen: int = 0
    fallbacks: int = 0  # batches that raised and were retried one request at a time
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches had it

    def record(self, size: int) -> None:
        self.requests += size
        self.batches += 1
        self.max_batch_seen = max(self.max_batch_seen, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1

    @property
    def mean_batch(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class MicroBatcher(Generic[T, R]):
    """Collect up to ``max_batch`` requests for up to ``max_wait_ms``, then call ``fn`` once.

    ``fn`` takes the list of request payloads and returns one result per payload, in order.
    It runs in ``executor`` (a private single worker thread when none is given).
    The batcher binds itself to the running event loop on first use.
    """

    def __init__(
        self,
        fn: BatchFn,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        executor: Executor | None = None,
        name: str = "batcher",
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.name = name
        self.stats = BatchStats()
        self._own_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"peapod-{name}")
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ public
    async def submit(self, payload: T) -> R:
        """Queue ``payload`` and wait for its result (or its exception)."""
        if self._closed:
            raise RuntimeError(f"{self.name}: batcher is closed")
        self._ensure_running()
        assert self._queue is not None and self._loop is not None
        future: asyncio.Future[R] = self._loop.create_future()
        await self._queue.put((payload, future))
        return await future

    async def aclose(self) -> None:
        """Stop the collecting task; requests still queued get a RuntimeError."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                _, future = self._queue.get_nowait()
                if not future.done():
                    future.set_exception(RuntimeError(f"{self.name}: batcher closed"))
        if self._own_executor:
            self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ internals
    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            # First use, or a new event loop (e.g. one test client after another): start afresh.
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(), name=f"peapod-{self.name}")

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            # Take whatever is already waiting without yielding to the timer.
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            remaining = deadline - time.monotonic()
            if len(batch) >= self.max_batch or remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        assert self._loop is not None
        while True:
            batch = await self._collect()
            live = [(p, f) for p, f in batch if not f.done()]  # drop requests whose client went away
            if not live:
                continue
            payloads = [p for p, _ in live]
            self.stats.record(len(payloads))
            try:
                results = await self._loop.run_in_executor(self._executor, self._call_batch, payloads)
            except Exception as exc:  # noqa: BLE001 - isolate the failing request(s) by retrying one by one
                if len(live) == 1:
                    if not live[0][1].done():
                        live[0][1].set_exception(exc)
                    continue
                self.stats.fallbacks += 1
                for payload, future in live:
                    try:
                        (result,) = await self._loop.run_in_executor(self._executor, self._call_batch, [payload])
                    except Exception as err:  # noqa: BLE001 - handed to the waiting request
                        if not future.done():
                            future.set_exception(err)
                    else:
                        if not future.done():
                            future.set_result(result)
                continue
            for (_, future), result in zip(live, results):
                if not future.done():
                    future.set_result(result)

    def _call_batch(self, payloads: list[T]) -> list[R]:
        results = list(self.fn(payloads))
        if len(results) != len(payloads):
            raise RuntimeError(
                f"{self.name}: batch function returned {len(results)} results for {len(payloads)} requests"
            )
        return results
