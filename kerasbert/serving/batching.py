"""Merging concurrent requests into one model call, as TF Serving's batching does.

`BatchScheduler` gathers calls of one signature whose inputs have the same
shape into batches of up to `max_batch_size` rows, runs each batch as one
call, and hands each request its own rows of the outputs. The REST and gRPC
APIs share one with `--enable_batching`; `batch_scheduler_from_parameters`
makes it from TF Serving's `BatchingParameters` (`--batching_parameters_file`).

Example:

>>> scheduler = BatchScheduler(max_batch_size=32, batch_timeout_micros=1000)
>>> outputs = await scheduler.submit((id(servable), "serving_default"), inputs, run)

Reference: TensorFlow's `batching_util/shared_batch_scheduler.h`, which
TF Serving's batching uses (https://github.com/tensorflow/tensorflow), and TF
Serving's `batching/batching_session.cc` and `session_bundle_config.proto`
(https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import asyncio
import os
from typing import Mapping

import numpy as np

from kerasbert.serving.rest.errors import RestError

__all__ = ["BatchScheduler", "batch_scheduler_from_parameters"]

# SharedBatchScheduler's QueueOptions defaults, which TF Serving uses for a
# field that BatchingParameters leaves unset.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10


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
        max_enqueued_batches: batches waiting for a thread (open ones
            included); a request that needs one more gets UNAVAILABLE, as in
            TF Serving. No limit by default.
        allowed_batch_sizes: sizes a model call may have, increasing, the
            last equal to `max_batch_size`; a batch is padded with copies of
            its first row up to the next allowed size, and the padding's
            outputs dropped. Any size by default.
    """

    def __init__(
        self,
        max_batch_size=32,
        batch_timeout_micros=1000,
        num_batch_threads=None,
        max_enqueued_batches=None,
        allowed_batch_sizes=(),
    ):
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
        if max_enqueued_batches is not None and max_enqueued_batches < 1:
            raise ValueError(
                "Invalid value for argument `max_enqueued_batches`. Expected None or an integer >= 1. "
                f"Received: max_enqueued_batches={max_enqueued_batches}"
            )
        allowed_batch_sizes = tuple(allowed_batch_sizes)
        if allowed_batch_sizes:
            if any(b <= a for a, b in zip(allowed_batch_sizes, allowed_batch_sizes[1:])) or (
                allowed_batch_sizes[0] < 1
            ):
                raise ValueError(
                    "Invalid value for argument `allowed_batch_sizes`. Expected increasing integers >= 1. "
                    f"Received: allowed_batch_sizes={list(allowed_batch_sizes)}"
                )
            if allowed_batch_sizes[-1] != max_batch_size:
                # TF Serving's message (bundle_factory_util.cc).
                raise ValueError(
                    "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                    f"{allowed_batch_sizes[-1]}; expected {max_batch_size}"
                )
        self.max_batch_size = max_batch_size
        self.batch_timeout_micros = batch_timeout_micros
        self.num_batch_threads = num_batch_threads
        self.max_enqueued_batches = max_enqueued_batches
        self.allowed_batch_sizes = allowed_batch_sizes
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
            self._check_queue()
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
            self._check_queue()
            batch = _Batch(run, loop.time())
            self._open[key] = batch
            batch.timer = loop.call_later(self.batch_timeout_micros / 1e6, self._time_out, batch)
        batch.items.append((inputs, rows, future))
        batch.rows += rows
        if batch.rows >= self.max_batch_size:
            self._close(key, batch)
        self._dispatch()
        return await future

    def _check_queue(self):
        if (
            self.max_enqueued_batches is not None
            and len(self._open) + len(self._full) >= self.max_enqueued_batches
        ):
            # TF Serving's status (shared_batch_scheduler.h).
            raise RestError(
                "The batch scheduling queue to which this task was submitted is full",
                "UNAVAILABLE",
            )

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
            await self._run_alone(self._padded(batch.run), items[0])
            return
        names = list(items[0][0])
        merged = {name: np.concatenate([inputs[name] for inputs, _, _ in items]) for name in names}
        try:
            outputs = await self._padded(batch.run)(merged)
            total = sum(rows for _, rows, _ in items)
            if any(np.ndim(v) == 0 or np.shape(v)[0] != total for v in outputs.values()):
                raise ValueError("an output's first axis is not the batch")
        except Exception:  # noqa: BLE001  (retried one by one below, where each gets its own error)
            for item in items:
                self.calls += 1
                await self._run_alone(self._padded(batch.run), item)
            return
        start = 0
        for _, rows, future in items:
            if not future.done():
                future.set_result(
                    {name: value[start : start + rows] for name, value in outputs.items()}
                )
            start += rows

    def _padded(self, run):
        """`run`, with its inputs padded to an allowed batch size and the padding's outputs dropped."""
        if not self.allowed_batch_sizes:
            return run

        async def padded_run(inputs):
            rows = _batch_rows(inputs)
            size = next(
                (s for s in self.allowed_batch_sizes if rows is not None and s >= rows), None
            )
            if size is None or size == rows:
                return await run(inputs)
            padded = {
                name: np.concatenate([value, np.repeat(value[:1], size - rows, axis=0)])
                for name, value in inputs.items()
            }
            outputs = await run(padded)
            return {
                name: value[:rows] if np.ndim(value) and np.shape(value)[0] == size else value
                for name, value in outputs.items()
            }

        return padded_run

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


def batch_scheduler_from_parameters(parameters) -> BatchScheduler:
    """A `BatchScheduler` set as TF Serving sets its batching from a `BatchingParameters`.

    An unset field takes TF Serving's default: `max_batch_size` 1000,
    `batch_timeout_micros` 0, `max_enqueued_batches` 10, `num_batch_threads`
    the CPU count. `thread_pool_name` only names TF Serving's threads;
    `pad_variable_length_inputs` changes nothing here, because only requests
    whose inputs have the same shape share a batch; and a request larger
    than `max_batch_size` runs alone, as with `enable_large_batch_splitting`.

    Args:
        parameters: a `kerasbert.serving.text_protos.BatchingParameters`.

    Raises:
        ValueError: a value TF Serving would refuse; the message names the field.
    """

    def value(field, default):
        if not parameters.HasField(field):
            return default
        number = getattr(parameters, field).value
        if number < (0 if field == "batch_timeout_micros" else 1):
            floor = 0 if field == "batch_timeout_micros" else 1
            raise ValueError(
                f"Invalid value for `{field}`. Expected an integer >= {floor}. Received: {field} {{ value: {number} }}"
            )
        return number

    return BatchScheduler(
        max_batch_size=value("max_batch_size", DEFAULT_MAX_BATCH_SIZE),
        batch_timeout_micros=value("batch_timeout_micros", DEFAULT_BATCH_TIMEOUT_MICROS),
        num_batch_threads=value("num_batch_threads", None),
        max_enqueued_batches=value("max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES),
        allowed_batch_sizes=list(parameters.allowed_batch_sizes),
    )
