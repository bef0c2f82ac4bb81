"""Dynamic batching driven by TF Serving's batching parameters.

Requests (tasks) queue per signature; a batch closes when it holds
`max_execution_batch_size` rows or `batch_timeout_micros` has passed since its
first task, and runs on one of `num_batch_threads` threads. A task never spans
two batches here: one larger than the execution size runs alone (TF Serving
would split it when large-batch splitting is on; the outputs are the same).
A batch whose run fails is run again task by task, so that a request the model
refuses (say, bytes that are not a JPEG for a graph that decodes one) fails alone,
with its own error, and the others of its batch are still answered. This is
deliberately kinder than TensorFlow Serving, whose BatchingSession::ProcessBatch
gives every task of the batch the batch's status (tensorflow/serving,
tensorflow_serving/batching/batching_session.cc, the `MakeCleanup` that copies
`status` to each task): there one malformed request fails its neighbours too.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from services.tfserving.compat.errors import ServingError, invalid
from services.tfserving.compat.textproto import unwrap


@dataclass(frozen=True)
class BatchingParameters:
    max_batch_size: int = 64  # largest task (request) accepted, in rows
    max_execution_batch_size: int = 8  # rows executed together
    batch_timeout_micros: int = 2000
    num_batch_threads: int = 1
    max_enqueued_batches: int = 100

    @classmethod
    def from_textproto(cls, data: dict) -> "BatchingParameters":
        max_batch = int(unwrap(data.get("max_batch_size"), cls.max_batch_size))
        splitting = bool(unwrap(data.get("enable_large_batch_splitting"), False))
        exec_size = int(unwrap(data.get("max_execution_batch_size"), max_batch)) if splitting else max_batch
        return cls(
            max_batch_size=max_batch,
            max_execution_batch_size=exec_size,
            batch_timeout_micros=int(unwrap(data.get("batch_timeout_micros"), 0)),
            num_batch_threads=int(unwrap(data.get("num_batch_threads"), 1)),
            max_enqueued_batches=int(unwrap(data.get("max_enqueued_batches"), cls.max_enqueued_batches)),
        )


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future


class Batcher:
    def __init__(self, call: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], params: BatchingParameters, pool: ThreadPoolExecutor) -> None:
        self.call = call
        self.params = params
        self.pool = pool
        self.queue: asyncio.Queue[_Task] = asyncio.Queue()
        self.slots = asyncio.Semaphore(params.num_batch_threads)
        self.queued_rows = 0
        self.capacity_rows = params.max_enqueued_batches * params.max_execution_batch_size
        self._carry: _Task | None = None
        self._loop_task: asyncio.Task | None = None
        self.retired = False

    def retire(self) -> asyncio.Task | None:
        """The servable left service: finish what is queued, then let the collecting task end, so
        nothing keeps the unloaded model alive. Returns that task, to wait for. A late task (a gRPC
        request that found the servable just before) restarts the loop and is still served."""
        self.retired = True
        self.queue.put_nowait(None)  # type: ignore[arg-type]  # wakes an idle loop
        return self._loop_task

    async def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes = {a.shape[0] for a in inputs.values()}
        if len(sizes) > 1:  # rows are split back by the 0th dimension: it must be one size
            raise invalid(f"Batching session Run() input tensors must have equal 0th-dimension size, got {sorted(sizes)}")
        rows = sizes.pop()
        if rows > self.params.max_batch_size:
            raise invalid(f"Task size {rows} is larger than maximum input batch size {self.params.max_batch_size}")
        if self.queued_rows + rows > self.capacity_rows:
            raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was submitted is full")
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._collect())
        future = asyncio.get_running_loop().create_future()
        self.queued_rows += rows
        self.queue.put_nowait(_Task(inputs, rows, future))
        return await future

    async def _next(self) -> _Task | None:
        if self._carry is not None:
            task, self._carry = self._carry, None
            return task
        return await self.queue.get()

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.params.batch_timeout_micros / 1e6
        limit = self.params.max_execution_batch_size
        while True:
            if self.retired and self._carry is None and self.queue.empty():
                self._loop_task = None
                return
            first = await self._next()
            if first is None:
                continue
            batch, rows = [first], first.rows
            deadline = loop.time() + timeout
            while rows < limit:
                if self.queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        task = await asyncio.wait_for(self.queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    task = self.queue.get_nowait()
                if task is None:  # retired: run what is collected
                    break
                if rows + task.rows > limit:
                    self._carry = task
                    break
                batch.append(task)
                rows += task.rows
            await self.slots.acquire()
            self.queued_rows -= rows
            loop.create_task(self._run(batch))

    async def _run(self, batch: list[_Task]) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                if len(batch) == 1:
                    merged = batch[0].inputs
                else:
                    merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
                outputs = await loop.run_in_executor(self.pool, self.call, merged)
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0], error=exc)
                    return
                # one task's values may be what the model refused: run each task alone, so that a
                # malformed request fails by itself and its neighbours are still served
                for t in batch:
                    if t.future.done():  # its caller has gone: nothing to run it for
                        continue
                    try:
                        _settle(t, result=await loop.run_in_executor(self.pool, self.call, t.inputs))
                    except Exception as single:
                        _settle(t, error=single)
                return
        finally:
            self.slots.release()
        start = 0
        for t in batch:
            end = start + t.rows
            _settle(t, result={k: v[start:end] for k, v in outputs.items()})
            start = end


def _settle(task: _Task, result: dict[str, np.ndarray] | None = None, error: BaseException | None = None) -> None:
    """The task's answer, unless its caller has gone. An error goes to the caller as raised: the
    engine maps it (the graph's InvalidArgumentError to INVALID_ARGUMENT, anything else to INTERNAL)."""
    if task.future.done():
        return
    if error is not None:
        task.future.set_exception(error)
    else:
        task.future.set_result(result)
