"""What the routes share: the served models, admission, metrics, and the readiness flags."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from m3engine.errors import ModelNotServedError, NotReadyError, UnsupportedTaskError
from m3engine.metrics import Metrics
from m3engine.models.kinds import ModelKind
from m3engine.models.spec import ModelSpec
from m3engine.scheduling.admission import Admission
from m3engine.scheduling.scheduler import Scheduler
from m3engine.scheduling.submitter import Submitter
from m3engine.server.names import assign_aliases, names_of
from m3engine.settings import EngineSettings, ServerSettings
from m3engine.tokenization.tokenizer import TextTokenizer

if TYPE_CHECKING:  # an HTTP frontend process imports this module and must not load torch
    from m3engine.engine import Engine

# Which model kinds can serve each task family; the first served model of a fitting kind is the default.
TASK_KINDS: dict[str, tuple[ModelKind, ...]] = {
    "embed": (ModelKind.BGE_M3, ModelKind.EMBEDDING),
    "m3": (ModelKind.BGE_M3,),
    "rerank": (ModelKind.RERANKER,),
    "classify": (ModelKind.CLASSIFIER, ModelKind.RERANKER),
    "tokenize": tuple(ModelKind),
}


class ServedEngine(Protocol):
    """What the routes read of a model besides running it: an `Engine`, or a frontend's `ModelView`."""

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def tokenizer(self) -> TextTokenizer: ...

    @property
    def settings(self) -> EngineSettings: ...

    @property
    def max_length(self) -> int: ...

    def info(self) -> dict[str, Any]: ...


@dataclass
class ServedModel:
    names: tuple[str, ...]  # what a request's `model` may say (server/names.py); the first is reported
    engine: ServedEngine
    scheduler: Submitter
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def kind(self) -> ModelKind:
        return self.engine.spec.kind

    def answers_to(self, requested: str) -> bool:
        return requested in self.names


class ServerState:
    """`engines`: models run in this process. An HTTP frontend passes none, its own share of the
    admission budgets and multiprocess metrics, and adds models whose scheduler is remote."""

    def __init__(
        self,
        settings: ServerSettings,
        engines: Sequence[Engine] = (),
        *,
        admission: Admission | None = None,
        metrics: Metrics | None = None,
        frontend: int | None = None,
    ) -> None:
        self.settings = settings
        self.frontend = frontend  # index of this HTTP frontend process; None: one process serves all
        self.metrics = metrics or Metrics()
        self.admission = admission or Admission(
            settings.max_concurrent_requests,
            settings.max_queued_tokens,
            max_answer_bytes=settings.max_answer_bytes,
        )
        self.metrics.track_admission(
            lambda: self.admission.requests,
            lambda: self.admission.tokens,
            lambda: self.admission.answer_bytes,
        )
        self.tokenize_pool = ThreadPoolExecutor(settings.tokenizer_workers, thread_name_prefix="tokenize")
        self.models: list[ServedModel] = []
        if engines:
            self.metrics.track_gpu()
        served: list[tuple[ServedEngine, Submitter]] = []
        for engine in engines:
            scheduler = Scheduler(
                engine.spec.name,
                engine,
                self.admission,
                self.metrics,
                self.tokenize_pool,
                short_query_tokens=settings.short_query_tokens,
            )
            scheduler.on_death = self._worker_died
            fell_back = engine.precision is not None and engine.precision.fell_back
            self.metrics.precision_fallback.labels(model=engine.spec.name).set(1 if fell_back else 0)
            served.append((engine, scheduler))
        self.serve(served)
        self.on_fatal: Callable[[], None] | None = None  # set by the CLI: stop the process
        self.started = False  # models loaded, warmed up, workers running
        self.on_started: Callable[[], None] | None = None  # an HTTP frontend tells the engine process
        # Why the server's other processes are not ready yet (HTTP frontends: not every one serves);
        # None when they are, or when this process is the whole server.
        self.peers_waiting: Callable[[], str | None] = lambda: None
        self.draining = False  # SIGTERM received: refuse new work, finish what is in flight
        # The HTTP implementation uvicorn runs, set when it starts (server/draining.py's DrainingServer);
        # None while the app is not served by it (an in-process ASGI client).
        self.http: str | None = None

    def serve(self, models: Sequence[tuple[ServedEngine, Submitter]]) -> None:
        """Add the models (run here, or remote in an HTTP frontend) under their served names."""
        aliases = assign_aliases([e.spec.name for e, _ in models], self.settings.served_model_name)
        for (engine, scheduler), own in zip(models, aliases, strict=True):
            self.models.append(ServedModel(names_of(engine.spec.name, own), engine, scheduler))

    def _worker_died(self) -> None:
        if self.settings.exit_on_worker_death and self.on_fatal is not None:
            self.on_fatal()

    @property
    def ready(self) -> bool:
        return (
            self.started
            and not self.draining
            and all(m.scheduler.alive for m in self.models)
            and self.peers_waiting() is None
        )

    def not_ready_reason(self) -> str | None:
        if not self.started:
            return "warming up"
        if self.draining:
            return "draining for shutdown"
        dead = [m.name for m in self.models if not m.scheduler.alive]
        if dead:
            return f"worker stopped or unreachable for {', '.join(dead)}"
        return self.peers_waiting()

    def degraded(self) -> str | None:
        """Why some model runs on its --fallback now; None while each runs on its primary alone."""
        reasons = [f"{m.name}: {why}" for m in self.models if (why := m.scheduler.serving.degraded)]
        return "; ".join(reasons) or None

    def resolve(self, requested: str | None, task: str) -> ServedModel:
        """The model a request names (or the default one for its task), checked to support the task."""
        if self.draining:
            raise NotReadyError("the server is shutting down; send the request to another replica")
        kinds = TASK_KINDS[task]
        if requested:
            for model in self.models:
                if model.answers_to(requested):
                    if model.kind not in kinds:
                        raise UnsupportedTaskError(
                            f"model {model.name} is a {model.kind.value} model and cannot serve this route"
                        )
                    return model
            served = ", ".join(name for m in self.models for name in m.names)
            raise ModelNotServedError(
                f"the requested model is not served here; send one of these names as `model`: {served}"
            )
        for model in self.models:
            if model.kind in kinds:
                return model
        wanted = " or ".join(k.value for k in kinds)
        raise UnsupportedTaskError(f"this server serves no {wanted} model for this route")
