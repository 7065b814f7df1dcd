"""One engine of a Ray fleet: the actor behind `Fleet`, on one GPU or a share of a machine's cores.

A plain class that `Fleet` wraps with `ray.remote`, so this module imports without
Ray. The worker drafts from a `TieredStore`: the corpus store that the driver built
once (mapped read-only from the object store) under a local store of past outputs,
its own and those of the rest of the fleet, which arrive with each shard of work.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from lookahead.api import Lookahead
from lookahead.result import Result
from lookahead.engine import EngineConfig


@dataclass
class WorkerSetup:
    """What every worker of a fleet is built from (the driver's options, minus the cluster)."""

    model: str | None
    drafter: str
    dtype: str
    device: str
    config: EngineConfig
    task: str | None


@dataclass
class Shared:
    """Fleet outputs since the last shard: [(worker index, output token ids)], one object-store chunk."""

    outputs: list[tuple[int, list[int]]]


class FleetWorker:
    def __init__(self, index: int, setup: WorkerSetup, base_store, threads: int | None):
        import torch

        from lookahead.drafters.tiered_store import TieredStore

        if threads:
            torch.set_num_threads(threads)
        self.index = index
        self.store = TieredStore(base_store) if base_store is not None else None
        self.results: list[Result] = []
        self.fleet_outputs = 0  # other workers' outputs learned
        self._setup_error = None
        try:
            self.lm = Lookahead(setup.model, drafter=setup.drafter, dtype=setup.dtype, device=setup.device,
                                config=setup.config, task=setup.task, store=self.store)
        except ValueError as e:  # the user's mistake (model, device): the driver says it in one line
            self._setup_error = str(e)

    def setup_error(self) -> str | None:
        return self._setup_error

    def pid(self) -> int:
        return os.getpid()

    def serve(self, specs: list, sampling: dict, shared: list, speculate: bool = True) -> Iterator[Result]:
        """Decode a shard, yielding each Result as it finishes; first learn the fleet's new outputs."""
        import ray

        for chunk in ray.get(shared):
            self.learn(chunk)
        for res in self.lm.results(specs, speculate=speculate, **sampling):
            if speculate:
                self.results.append(res)
            yield res

    def learn(self, chunk: Shared) -> None:
        if self.store is None:
            return
        theirs = [ids for worker, ids in chunk.outputs if worker != self.index]  # ours went in at stop()
        self.store.extend(theirs)
        self.fleet_outputs += len(theirs)

    def stats(self) -> dict:
        return {"worker": self.index, "pid": os.getpid(), "requests": len(self.results),
                "fleet_outputs_learned": self.fleet_outputs,
                "shared_store_tokens": len(self.store.base) if self.store else 0,
                "local_store_tokens": len(self.store.local) if self.store else 0,
                "oom_retries": self.lm.oom_retries,
                "model": self.lm.model_name, "device": str(self.lm.engine.device), "dtype": self.lm.dtype}
