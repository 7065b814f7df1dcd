"""The engine thread: every connection's requests feed one continuously batched engine.

The torch engine is not thread-safe, so one thread makes every engine call. Between steps it
takes new requests and cancellations from a thread-safe inbox; it steps while there is work and
hands each request's chunks to its connection (`Job.deliver`, which must be thread-safe).
Rules:
- the queue is bounded: `submit` refuses a request when `max_queue` are already waiting;
- a request that cannot run, or that the engine fails, ends with a `Failure`; the others go on;
- a step that raises fails the requests in flight (their KV blocks freed) and the loop goes on;
  if the loop itself dies, `error` says why, and every request in flight or asked later fails;
- `stop` refuses new requests, finishes those in flight, then ends the thread (a drain).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from lookahead.engine.config import RequestError
from lookahead.result import Chunk
from lookahead.run.requests_io import InputError, RequestSpec
from lookahead.serve.metrics import Metrics


@dataclass
class Failure:
    """The end of a request that gave no result: status 400 (it cannot run) or 500 (the server failed it)."""

    status: int
    message: str


@dataclass
class Job:
    """One request from a connection to the engine thread."""

    id: str  # unique among the requests in flight (the server makes it)
    spec: RequestSpec
    deliver: Callable[[Chunk | Failure], None]  # called on the engine thread with each chunk, or the Failure


class QueueFull(Exception):
    """`max_queue` requests are waiting already (HTTP 503 with Retry-After)."""


class EngineStopped(Exception):
    """The loop takes no requests: it is draining, or it died (`EngineLoop.error`)."""


class EngineLoop:
    def __init__(self, lm, max_queue: int, metrics: Metrics | None = None):
        self.lm = lm  # a lookahead.Lookahead, called on this loop's thread only
        self.max_queue = max_queue
        self.metrics = metrics or Metrics()
        self.total_blocks = lm.engine.cache.free_blocks()  # none is owned before the first request
        self.stopping = False
        self.error: str | None = None  # why the loop died
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()  # ("add", Job) | ("cancel", id) | ("wake", None)
        self._lock = threading.Lock()  # guards _queued, stopping and error against submit
        self._queued = 0  # submitted, not yet in the engine's own waiting queue
        self._jobs: dict[str, Job] = {}  # requests in the engine (this thread only)
        self._thread = threading.Thread(target=self._main, name="lookahead-engine", daemon=True)

    def start(self) -> EngineLoop:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def waiting(self) -> int:
        """Requests queued: submitted and not yet decoding."""
        return self._queued + len(self.lm.engine.waiting)

    def running(self) -> int:
        return len(self.lm.engine.running)

    def free_blocks(self) -> int:
        return self.lm.engine.cache.free_blocks()

    def submit(self, job: Job) -> None:
        """Queue a request (any thread); QueueFull or EngineStopped when it is refused."""
        with self._lock:
            if self.error is not None:
                raise EngineStopped(f"the engine loop stopped: {self.error}")
            if self.stopping:
                raise EngineStopped("the server is shutting down")
            if self.waiting() >= self.max_queue:
                raise QueueFull(f"{self.waiting()} requests are waiting already (--max-queue {self.max_queue})")
            self._queued += 1
        self._inbox.put(("add", job))

    def cancel(self, request_id: str) -> None:
        """Drop a request (any thread; its KV blocks are freed before the next step). Idempotent."""
        self._inbox.put(("cancel", request_id))

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish those in flight, end the thread."""
        with self._lock:
            self.stopping = True
        self._inbox.put(("wake", None))
        self._thread.join(timeout)

    # ---- the engine thread ---------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            while True:
                idle = not self.lm.engine.has_work()
                if idle and self.stopping and self._inbox.empty():
                    return
                self._take(block=idle)
                if self.lm.engine.has_work():
                    self._step()
        except BaseException as e:  # the loop is dead: say so, fail whoever waits
            with self._lock:
                self.error = f"{type(e).__name__}: {e}"
            self._fail_all(f"the engine loop stopped: {self.error}", free=False)  # the engine is not trusted now
            while not self._inbox.empty():
                kind, job = self._inbox.get()
                if kind == "add":
                    self._send(job, Failure(500, f"the engine loop stopped: {self.error}"))

    def _take(self, block: bool) -> None:
        """Apply the inbox's commands: the first waited for when `block`, then all that are there."""
        try:
            item = self._inbox.get(block)
        except queue.Empty:
            return
        while True:
            kind, arg = item
            if kind == "add":
                self._add(arg)
            elif kind == "cancel" and arg in self._jobs:
                del self._jobs[arg]
                self.lm.cancel(arg)
                self.metrics.cancelled += 1
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _add(self, job: Job) -> None:
        try:
            self.lm.add(job.spec)
        except (RequestError, InputError, TypeError) as e:  # TypeError: a field SamplingParams lacks
            self.metrics.failed += 1
            self._send(job, Failure(400, str(e)))
        except Exception as e:  # a bug in one request's set-up fails that request alone
            self.metrics.failed += 1
            self._send(job, Failure(500, f"{type(e).__name__}: {e}"))
        else:
            self._jobs[job.id] = job
        finally:
            with self._lock:
                self._queued -= 1

    def _step(self) -> None:
        try:
            chunks = self.lm.step()
        except Exception as e:
            self._fail_all(f"the engine failed a step: {type(e).__name__}: {e}")
            return
        log = self.lm.engine.step_log
        for st in log:  # read once and dropped: a server steps for days
            self.metrics.on_step(st.requests, st.draft_nodes, st.seconds)
        log.clear()
        self.metrics.on_tokens(sum(len(c.token_ids) for c in chunks))
        for c in chunks:
            job = self._jobs.get(c.id)
            if job is None:
                continue
            if c.result is not None:
                del self._jobs[c.id]
                r = c.result
                if r.error is None:
                    self.metrics.on_result(r.output_tokens, r.target_forwards, r.drafted, r.accepted)
                else:
                    self.metrics.failed += 1
            self._send(job, c)

    def _fail_all(self, message: str, free: bool = True) -> None:
        """End every request in the engine with a Failure (500); `free`: drop them from the engine too."""
        for rid, job in list(self._jobs.items()):
            del self._jobs[rid]
            self.metrics.failed += 1
            self._send(job, Failure(500, message))
            if free:
                self.lm.cancel(rid)

    def _send(self, job: Job, event: Chunk | Failure) -> None:
        try:
            job.deliver(event)
        except RuntimeError:  # the connection's event loop is closed: nobody listens any more
            if job.id in self._jobs:
                del self._jobs[job.id]
                self.lm.cancel(job.id)
