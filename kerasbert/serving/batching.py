"""Merging concurrent requests into one model call, as TF Serving's batching does.

`BatchScheduler` gathers calls of one signature whose inputs have the same
shape into batches of up to `max_batch_size` rows, runs each batch as one
call, and hands each request its own rows of the outputs. The REST server
uses it with `--enable_batching`.

Example:

>>> scheduler = BatchScheduler(max_batch_size=32, batch_timeout_micros=1000)
>>> outputs = await scheduler.submit((id(servable), "serving_default"), inputs, run)

Reference: TensorFlow's `batching_util/shared_batch_scheduler.h`, which
TF Serving's batching uses (https://github.com/tensorflow/tensorflow).
"""

from __future__ import annotations

import asyncio
import os
from typing import Mapping

import numpy as np

__all__ = ["BatchScheduler"]


# === Batching ===


class _Batch:
    def __init__(self, run, opened):
        self.run = run
        self.opened = opened
        self.items = []  # (inputs, rows, future)
        self.rows = 0
        self.timed_out = False
        self.timer = None


class BatchScheduler:
    """Merges concurrent calls of one signature into one model call.

    Requests with the same key (servable, signature and input shapes) join
    an open batch. A batch is run when it holds `max_batch_size` rows, or
    once `batch_timeout_micros` have passed since it opened, as soon as one
    of `num_batch_threads` is free: while all are busy the open batch keeps
    filling, so batches grow with the load, as in TF Serving's shared batch
    scheduler. Inputs are concatenated along the first axis, run once, and
    the outputs split back. A request of `max_batch_size` rows or more runs
    alone. If a merged call fails, each request is run on its own so one bad
    input can't fail its neighbours.

    Args:
        max_batch_size: the most rows in one model call.
        batch_timeout_micros: how long an open batch waits for more requests.
        num_batch_threads: batches run at the same time; the CPU count by
            default.
    """

    def __init__(self, max_batch_size=32, batch_timeout_micros=1000, num_batch_threads=None):
        if max_batch_size < 1:
            raise ValueError(
                "Invalid value for argument `max_batch_size`. Expected an integer >= 1. "
                f"Received: max_batch_size={max_batch_size}"
            )
        if batch_timeout_micros < 0:
            raise ValueError(
                "Invalid value for argument `batch_timeout_micros`. Expected an integer >= 0. "
                f"Received: batch_timeout_micros={batch_timeout_micros}"
            )
        num_batch_threads = num_batch_threads or os.cpu_count() or 1
        if num_batch_threads < 1:
            raise ValueError(
                "Invalid value for argument `num_batch_threads`. Expected an integer >= 1. "
                f"Received: num_batch_threads={num_batch_threads}"
            )
        self.max_batch_size = max_batch_size
        self.batch_timeout_micros = batch_timeout_micros
        self.num_batch_threads = num_batch_threads
        self._open: dict[tuple, _Batch] = {}
        self._full: list[_Batch] = []  # closed, waiting for a free thread
        self._active = 0
        self._tasks: set[asyncio.Task] = set()
        self.calls = 0  # model calls made, for tests and curiosity

    async def submit(self, key, inputs: Mapping[str, np.ndarray], run) -> dict:
        """Runs `await run(inputs)` as part of a batch; returns this request's outputs.

        Args:
            key: what must match for requests to share a call (e.g. the
                servable and the signature); input shapes are added to it.
            inputs: `{name: array}` with the batch on the first axis.
            run: `async run(inputs) -> {name: array}`.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        rows = _batch_rows(inputs)
        if rows is None or rows >= self.max_batch_size:
            batch = _Batch(run, loop.time())
            batch.items.append((inputs, rows, future))
            self._full.append(batch)
            self._dispatch()
            return await future
        key = (key, tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items())))
        batch = self._open.get(key)
        if batch is not None and batch.rows + rows > self.max_batch_size:
            self._close(key, batch)
            batch = None
        if batch is None:
            batch = _Batch(run, loop.time())
            self._open[key] = batch
            batch.timer = loop.call_later(self.batch_timeout_micros / 1e6, self._time_out, batch)
        batch.items.append((inputs, rows, future))
        batch.rows += rows
        if batch.rows >= self.max_batch_size:
            self._close(key, batch)
        self._dispatch()
        return await future

    def _close(self, key, batch: _Batch):
        del self._open[key]
        if batch.timer is not None:
            batch.timer.cancel()
        self._full.append(batch)

    def _time_out(self, batch: _Batch):
        batch.timed_out = True
        self._dispatch()

    def _dispatch(self):
        """Starts ready batches while threads are free: full ones first, then
        the oldest open batch past its timeout."""
        while self._active < self.num_batch_threads:
            if self._full:
                batch = self._full.pop(0)
            else:
                ready = [(b.opened, k) for k, b in self._open.items() if b.timed_out]
                if not ready:
                    return
                key = min(ready)[1]
                batch = self._open[key]
                self._close(key, batch)
                self._full.remove(batch)
            self._active += 1
            task = asyncio.ensure_future(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task):
        self._tasks.discard(task)
        self._active -= 1
        self._dispatch()

    async def _execute(self, batch: _Batch):
        items = [item for item in batch.items if not item[2].done()]
        if not items:
            return
        self.calls += 1
        if len(items) == 1:
            await self._run_alone(batch.run, items[0])
            return
        names = list(items[0][0])
        merged = {name: np.concatenate([inputs[name] for inputs, _, _ in items]) for name in names}
        try:
            outputs = await batch.run(merged)
            total = sum(rows for _, rows, _ in items)
            if any(np.ndim(v) == 0 or np.shape(v)[0] != total for v in outputs.values()):
                raise ValueError("an output's first axis is not the batch")
        except Exception:  # noqa: BLE001  (retried one by one below, where each gets its own error)
            for item in items:
                self.calls += 1
                await self._run_alone(batch.run, item)
            return
        start = 0
        for _, rows, future in items:
            if not future.done():
                future.set_result(
                    {name: value[start : start + rows] for name, value in outputs.items()}
                )
            start += rows

    @staticmethod
    async def _run_alone(run, item):
        inputs, _, future = item
        try:
            result = await run(inputs)
        except Exception as error:  # noqa: BLE001  (handed to the request that caused it)
            if not future.done():
                future.set_exception(error)
            return
        if not future.done():
            future.set_result(result)


def _batch_rows(inputs: Mapping[str, np.ndarray]) -> int | None:
    sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
    if len(sizes) != 1 or None in sizes:
        return None
    return sizes.pop()
