"""The corpus job on Ray Data: a dataset of shards, mapped by a pool of actors that each hold an engine.

One actor per GPU of the cluster (`num_gpus=1` each), or CPU workers where there is none. Ray Data
restarts an actor that dies and runs its shard again; since a shard's file is written under a
temporary name and renamed when complete, a shard retried after a kill is written exactly once.
Results stream back as shards finish, which feeds the progress line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from m3engine.distributed.job import CorpusJob
from m3engine.distributed.rows import Shard
from m3engine.distributed.shard import OnShard, ShardEmbedder, ShardResult
from m3engine.errors import BackendUnavailableError

COLUMNS = ("name", "rows", "embedded", "failed", "tokens", "seconds")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError(
            "--ray needs Ray: pip install 'm3engine[ray]' (or run without --ray, in one process)"
        ) from None
    return ray


class ShardActor:
    """Ray Data's callable class: one engine per actor, batches of one shard each."""

    def __init__(self, job: CorpusJob, threads: int) -> None:
        import torch

        if job.engine.device == "cpu" or not torch.cuda.is_available():
            torch.set_num_threads(threads)  # CPU workers share the host's cores
        self.embedder = ShardEmbedder(job)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        for values in zip(*(batch[f] for f in Shard.__dataclass_fields__), strict=True):
            shard = Shard(*(v.item() if hasattr(v, "item") else v for v in values))
            result = self.embedder(shard)
            for column in COLUMNS:
                out[column].append(result[column])
        return out


def run_ray(
    job: CorpusJob, shards: Sequence[Shard], progress: OnShard, address: str, workers: int | None
) -> list[ShardResult]:
    if not shards:
        return []
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=None if address == "local" else address, log_to_driver=False)
    try:
        # A job told to run on the CPU takes no GPU, even where the cluster has some.
        gpus = 0 if job.engine.device == "cpu" else int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = workers or gpus or min(2, cpus)
        threads = max(1, cpus // count)
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts rows and tokens
        dataset = ray.data.from_items([asdict(s) for s in shards], override_num_blocks=len(shards))
        mapped = dataset.map_batches(
            ShardActor,
            fn_constructor_kwargs={"job": job, "threads": threads},
            batch_size=1,
            # Ray Data's actor pools restart a dead actor and retry the shard it held (its defaults
            # max_restarts=-1, max_task_retries=-1): the killed-worker test relies on them.
            compute=ray.data.ActorPoolStrategy(size=min(count, len(shards))),
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else threads,
        )
        results = []
        for row in mapped.iter_rows():
            progress(int(row["rows"]), int(row["tokens"]))
            results.append({c: row[c] for c in COLUMNS})
        return results
    finally:
        if started_here:
            ray.shutdown()


def default_address() -> str:
    """`--ray` without an address: RAY_ADDRESS when set, else a cluster started in this process."""
    return os.environ.get("RAY_ADDRESS") or "local"
