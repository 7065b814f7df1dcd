"""One run's requests shared out over a Ray cluster: one engine per GPU (or per share of a CPU machine).

The driver (this process) builds the retrieval datastore once, puts it in Ray's
object store for every worker to map read-only, and hands out shards of requests:
a new shard to whichever worker has finished its last, so fast and slow workers
stay busy. Results stream back one at a time and only the driver writes them, so
`--resume` works as it does in one process. A worker that dies has the requests it
had not yet returned put back at the head of the queue and a fresh worker takes
its place: every request is answered exactly once. The outputs finished since a
worker's last shard travel with its next one as a single object-store chunk, so
each worker drafts from the whole fleet's history (SuffixDecoding's global cache),
at most one shard late.

>>> from lookahead import Fleet
>>> with Fleet(address="local", workers=2) as fleet:                # doctest: +SKIP
...     [r] = fleet.generate(["Repeat exactly: the quick brown fox."], max_new_tokens=16)
>>> r.text                                                          # doctest: +SKIP
'The quick brown fox.'
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from lookahead.api import as_spec, build_store, prompt_list, request_id
from lookahead.result import Result, failed_result
from lookahead.fleet.cluster import FleetError, check_address, import_ray
from lookahead.engine import EngineConfig
from lookahead.fleet.worker import FleetWorker, Shared, WorkerSetup

@dataclass
class FleetStats:
    workers: int  # engines started at the outset
    worker_deaths: int = 0
    workers_replaced: int = 0
    requests_requeued: int = 0  # put back after their worker died
    shards: int = 0
    fleet_chunks: int = 0  # batches of outputs shared through the object store
    per_worker: list[dict] = field(default_factory=list)


@dataclass
class _Worker:
    index: int
    handle: object  # ray ActorHandle of FleetWorker
    chunks_seen: int = 0


@dataclass
class _Shard:
    worker: _Worker
    pending: dict  # request id -> (RequestSpec, attempts so far)


class Fleet:
    """`Lookahead`'s stream/generate over the workers of a Ray cluster.

    address: "local" starts a Ray instance on this machine for this run, "auto" joins
        the cluster this machine belongs to, anything else is a cluster address
        ("host:port", "ray://host:10001"). Every node needs lookahead and the model.
    workers: engines to start; default one per GPU, or one per 2 CPU cores.
    shard_size: most requests per hand-out (and never more than a fair share of the
        work left, queued or in flight); default 2 × the batch size, so that a worker batches continuously
        and the fleet's history reaches it often.
    max_attempts: a request whose worker died this many times fails (a request that
        kills every worker it meets must not take the fleet down).
    start_timeout: seconds to wait for the workers' engines (Ray waits forever for
        resources that other jobs hold).
    The other arguments are `Lookahead`'s.
    """

    def __init__(self, model: str | None = None, *, drafter: str = "auto", dtype: str = "auto",
                 device: str = "auto", config: EngineConfig | None = None, corpus: list[str] | None = None,
                 task: str | None = None, documents: list[str] | None = None, address: str = "local",
                 workers: int | None = None, shard_size: int | None = None, max_attempts: int = 3,
                 start_timeout: float = 600.0):
        from lookahead.models import load_tokenizer

        self._ray = ray = import_ray()
        config = config or EngineConfig()
        self.shard_size = shard_size or 2 * config.max_batch_size
        self.max_attempts, self.start_timeout = max_attempts, start_timeout
        self.setup = WorkerSetup(model, drafter, dtype, device, config, task)
        # The tokenizer alone checks the model path and builds the datastore before any worker starts.
        store = build_store(drafter, load_tokenizer(model), corpus, documents)
        self._started_ray = self._connect(address)
        try:
            self._store_ref = None if store is None else ray.put(store)
            self._resources = self._plan(workers, device)
            self._next_index = 0
            self._workers = [self._start_worker() for _ in range(self._resources["workers"])]
            self._check_started(self._workers)
        except BaseException:
            self.close()
            raise
        self.stats = FleetStats(len(self._workers))
        self._chunks: list = []  # object refs of Shared chunks, in order
        self._fresh: list[tuple[int, list[int]]] = []  # outputs not yet in a chunk

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the cluster ---------------------------------------------------------------------
    def _connect(self, address: str) -> bool:
        """Join or start a cluster; True when this Fleet started Ray (and stops it at close)."""
        ray = self._ray
        if ray.is_initialized():
            return False
        check_address(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=True)
        except Exception as e:  # Ray raises ConnectionError, ValueError, RuntimeError... for a bad address
            raise FleetError(f"cannot start or reach the Ray cluster at {address!r}: {_first_line(e)}") from None
        return True

    def _plan(self, workers: int | None, device: str) -> dict:
        """Workers and the resources each asks for, checked against the cluster's."""
        res = self._ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
        if device == "cuda" and gpus == 0:
            raise FleetError("--device cuda was asked for, but the Ray cluster has no GPU")
        on_gpu = device == "cuda" or (device == "auto" and gpus > 0)
        n = workers or (gpus if on_gpu else max(1, cpus // 2))
        have, unit = (gpus, "GPUs") if on_gpu else (cpus, "CPU cores")
        if n > have:
            raise FleetError(f"--workers {n} is more than the Ray cluster's {have} {unit}")
        # An engine runs on one node: no more cores each than the largest node has.
        biggest = max(int(node["Resources"].get("CPU", 0)) for node in self._ray.nodes() if node["Alive"])
        cores = 1 if on_gpu else max(1, min(cpus // n, biggest))
        return {"workers": n, "num_gpus": int(on_gpu), "num_cpus": cores, "device": "cuda" if on_gpu else "cpu",
                "threads": None if on_gpu else cores}

    def _start_worker(self) -> _Worker:
        r = self._resources
        actor = self._ray.remote(num_gpus=r["num_gpus"], num_cpus=r["num_cpus"])(FleetWorker)
        setup = WorkerSetup(**{**self.setup.__dict__, "device": r["device"]})
        index, self._next_index = self._next_index, self._next_index + 1
        return _Worker(index, actor.remote(index, setup, self._store_ref, r["threads"]))

    def _check_started(self, workers: list[_Worker]) -> None:
        """Wait for the workers' engines; a setup error (bad model) is one line, not a dead actor's traceback."""
        ray = self._ray
        try:
            errors = ray.get([w.handle.setup_error.remote() for w in workers], timeout=self.start_timeout)
        except ray.exceptions.RayActorError as e:
            raise FleetError(f"a Ray worker died while starting: {_first_line(e)}") from None
        except ray.exceptions.GetTimeoutError:  # an actor Ray cannot place waits forever otherwise
            raise FleetError(f"the Ray workers did not start within {self.start_timeout:.0f} s: are the "
                             f"cluster's CPUs or GPUs taken by other jobs?") from None
        for error in filter(None, errors):
            raise FleetError(f"a Ray worker could not start its engine: {error}")

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> process id (on its node)."""
        ray = self._ray
        return dict(zip((w.index for w in self._workers), ray.get([w.handle.pid.remote() for w in self._workers])))

    def close(self) -> None:
        ray = self._ray
        for w in getattr(self, "_workers", []):
            ray.kill(w.handle)
        self._workers = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()

    # -- decoding ------------------------------------------------------------------------
    def results(self, prompts, speculate: bool = True, **sampling) -> Iterator[Result]:
        """Yield each request's Result as some worker finishes it (any order, each once); arguments as
        `Lookahead.results`."""
        ray = self._ray
        queue = deque((as_spec(p, i), 0) for i, p in enumerate(prompt_list(prompts)))
        idle, running = list(self._workers), {}
        while queue or running:
            while idle and queue:
                worker = idle.pop()
                in_flight = sum(len(s.pending) for s in running.values())
                size = fair_share(len(queue), in_flight, len(self._workers), self.shard_size)
                shard = [queue.popleft() for _ in range(size)]
                gen = worker.handle.serve.options(num_returns="streaming").remote(
                    [spec for spec, _ in shard], sampling, self._unseen_chunks(worker), speculate)
                running[gen] = _Shard(worker, {spec.id: (spec, n) for spec, n in shard})
                self.stats.shards += 1
            if not running:  # work left and no worker: every one died and none could replace it
                yield from (failed_result(spec.id, "no Ray worker left to serve it") for spec, _ in queue)
                return
            [gen], _ = ray.wait(list(running), num_returns=1)
            shard = running[gen]
            try:
                res = ray.get(next(gen))
            except StopIteration:
                del running[gen]
                idle.append(shard.worker)
                continue
            except ray.exceptions.RayActorError:
                del running[gen]
                idle += self._replace(shard.worker)
                yield from self._requeue(shard, queue)
                continue
            except ray.exceptions.RayTaskError as e:  # the worker lives; its shard's unfinished requests fail
                del running[gen]
                idle.append(shard.worker)
                error = f"its Ray worker failed: {_first_line(getattr(e, 'cause', None) or e)}"
                yield from (failed_result(rid, error) for rid in shard.pending)
                continue
            shard.pending.pop(res.id, None)
            if speculate and res.error is None:
                self._fresh.append((shard.worker.index, res.token_ids))
            yield res

    def generate(self, prompts, **kw) -> list[Result]:
        """Results in the order of `prompts`."""
        prompts = prompt_list(prompts)
        by_id = {r.id: r for r in self.results(prompts, **kw)}
        return [by_id[request_id(p, i)] for i, p in enumerate(prompts)]

    def _unseen_chunks(self, worker: _Worker) -> list:
        """Object refs of the fleet's outputs this worker has not learned yet (one new chunk at most)."""
        if self._fresh and self._store_ref is not None:  # a drafter without a datastore learns nothing
            self._chunks.append(self._ray.put(Shared(self._fresh)))
            self.stats.fleet_chunks += 1
        self._fresh = []
        unseen, worker.chunks_seen = self._chunks[worker.chunks_seen:], len(self._chunks)
        return unseen

    def _replace(self, dead: _Worker) -> list[_Worker]:
        """A fresh worker for a dead one (it learns the whole history with its first shard)."""
        self.stats.worker_deaths += 1
        self._workers.remove(dead)
        if self.stats.workers_replaced >= self.stats.workers:  # a crash loop: go on with the survivors
            return []
        try:
            fresh = self._start_worker()
            self._check_started([fresh])
        except FleetError:
            return []
        self.stats.workers_replaced += 1
        self._workers.append(fresh)
        return [fresh]

    def _requeue(self, shard: _Shard, queue: deque) -> Iterator[Result]:
        """The dead worker's unreturned requests back at the head of the queue, in order."""
        for spec, attempts in reversed(list(shard.pending.values())):
            if attempts + 1 >= self.max_attempts:
                yield failed_result(spec.id, f"its Ray worker died {attempts + 1} times while serving it")
            else:
                queue.appendleft((spec, attempts + 1))
                self.stats.requests_requeued += 1

    # -- what the run summary asks ---------------------------------------------------------
    def worker_stats(self) -> list[dict]:
        return self._ray.get([w.handle.stats.remote() for w in self._workers])

    @property
    def model_name(self) -> str:
        return self.worker_stats()[0]["model"]

    @property
    def dtype(self) -> str:
        return self.worker_stats()[0]["dtype"]

    @property
    def device(self) -> str:
        return f"Ray {len(self._workers)}× {self._resources['device']}"

    @property
    def oom_retries(self) -> int:
        """The live workers' steps redone smaller after running out of GPU memory."""
        return sum(s["oom_retries"] for s in self.worker_stats())

    def summary(self) -> dict:
        self.stats.per_worker = self.worker_stats()
        return dict(self.stats.__dict__)


def fair_share(queued: int, in_flight: int, workers: int, shard_size: int) -> int:
    """Requests to hand an idle worker: at most a fair share of the work left, queued or in
    flight, so that the first shards split the queue evenly and every worker stays busy
    until the queue runs dry.

    >>> fair_share(12, 0, workers=2, shard_size=8), fair_share(6, 6, workers=2, shard_size=8)
    (6, 6)
    >>> fair_share(1, 5, workers=2, shard_size=8)  # never more than is queued
    1
    """
    return min(shard_size, queued, -(-(queued + in_flight) // workers))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
