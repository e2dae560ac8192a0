"""Ray Serve replicas of `m3engine serve`: the same FastAPI app (routes, auth, limits, errors) in each.

    serve run deploy/ray-serve.yaml                       # the documented config: autoscaling, GPUs
    serve run m3engine.distributed.serve:build_app model=BAAI/bge-m3 reranker=BAAI/bge-reranker-v2-m3

`build_app(args)` is Ray Serve's application builder. Its arguments are the fields of EngineSettings
and ServerSettings by name (`max_batch_tokens=8192`, `api_keys=k1,k2`), read as the CLI reads them
(a setting left out falls back to its M3ENGINE_* variable on the replica, then its default), plus
the deployment's shape: `num_replicas` (an integer or "auto"), `gpus_per_replica` (default 1 when
the cluster has GPUs, else 0) and `cpus_per_replica` (1). A config file's `deployments:` section
overrides these, and is where Ray Serve's autoscaling settings go.

Each replica batches across the requests it holds, so `max_ongoing_requests` is high (256): the
replica's own admission answers 429 when it is full, as a single server does. Ray Serve asks each
replica `check_health()`: it fails once the replica's worker has died (the app's /ready would be
503), and Ray Serve then replaces the replica.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from m3engine.errors import BackendUnavailableError
from m3engine.settings import EngineSettings, ServerSettings, from_sources

try:
    from ray import serve
except ImportError:  # pragma: no cover - the ray extra is a test dependency
    raise BackendUnavailableError(
        "m3engine.distributed.serve needs Ray Serve: pip install 'm3engine[ray]'"
    ) from None

DEPLOYMENT = "M3Engine"
SHAPE_ARGS = ("num_replicas", "gpus_per_replica", "cpus_per_replica", "max_ongoing_requests")


@serve.ingress()  # the app is built on the replica (__serve_build_asgi_app__), where the models load
class M3EngineReplica:
    def __init__(self, engine: EngineSettings, server: ServerSettings) -> None:
        self.engine_settings, self.server_settings = engine, server
        self.state: Any = None

    def __serve_build_asgi_app__(self) -> Any:
        from m3engine.server import logs
        from m3engine.server.app import create_app
        from m3engine.server.loading import load_engines

        logs.configure(self.server_settings.log_level)
        app = create_app(self.server_settings, load_engines(self.engine_settings, self.server_settings))
        self.state = app.state.server
        return app

    def check_health(self) -> None:
        """Ray Serve's health check: a replica whose worker died is replaced (started is False only
        during start-up, which Ray Serve waits out before it checks)."""
        state = self.state
        if state is not None and state.started and not state.ready:
            raise RuntimeError(f"m3engine replica not ready: {state.not_ready_reason()}")


def settings_from_args(args: Mapping[str, Any]) -> tuple[EngineSettings, ServerSettings]:
    """The settings named in `args` (unknown names are refused, with the known ones listed)."""
    engine_names = {f.name for f in dataclasses.fields(EngineSettings)}
    server_names = {f.name for f in dataclasses.fields(ServerSettings)}
    unknown = set(args) - engine_names - server_names - set(SHAPE_ARGS)
    if unknown:
        raise ValueError(
            f"unknown m3engine argument(s) {sorted(unknown)}: use settings fields "
            "(m3engine serve --help, with - as _) or " + ", ".join(SHAPE_ARGS)
        )
    as_text = {k: v if isinstance(v, str) else _text(v) for k, v in args.items()}
    engine: EngineSettings = from_sources(EngineSettings, {k: as_text.get(k) for k in engine_names}, {})
    server: ServerSettings = from_sources(ServerSettings, {k: as_text.get(k) for k in server_names}, {})
    return engine, server


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_app(args: Mapping[str, Any] | None = None) -> Any:
    """Ray Serve's application builder (see the module docstring)."""
    import ray

    args = dict(args or {})
    engine, server = settings_from_args(args)
    gpus = args.get("gpus_per_replica")
    if gpus is None:
        gpus = 1 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) else 0  # type: ignore[no-untyped-call]
    replicas = args.get("num_replicas", 1)
    deployment = serve.deployment(
        name=DEPLOYMENT,
        num_replicas=replicas if replicas == "auto" else int(replicas),
        max_ongoing_requests=int(args.get("max_ongoing_requests", 256)),
        ray_actor_options={"num_gpus": float(gpus), "num_cpus": float(args.get("cpus_per_replica", 1))},
        health_check_period_s=5,
    )(M3EngineReplica)
    return deployment.bind(engine, server)
