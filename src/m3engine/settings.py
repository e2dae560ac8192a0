"""One settings object: its fields are the CLI flags, the M3ENGINE_* environment variables and /info.

Precedence: a CLI flag, then the environment variable, then the default. Nothing here reads the
environment at import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from m3engine.errors import InputError

ENV_PREFIX = "M3ENGINE_"


def _opt(default: Any, help: str, secret: bool = False) -> Any:
    # repr=False keeps secrets out of any log line that prints the settings object
    return field(default=default, repr=not secret, metadata={"help": help, "secret": secret})


@dataclass(frozen=True)
class EngineSettings:
    model: str = _opt("BAAI/bge-m3", "Hub id or local directory of the model.")
    kind: str | None = _opt(
        None, "Model kind (bge-m3, embedding, reranker, classifier); detected from files."
    )
    revision: str | None = _opt(None, "Hub revision (branch, tag or commit) for a hub id.")
    backend: str = _opt(
        "auto",
        "fast (packed, CUDA graphs), reference (transformers), onnx (an artifact of m3engine build, "
        "ONNX Runtime), auto (fast on CUDA, reference on CPU), or a backend of your own as "
        "package.module:Factory.",
    )
    device: str = _opt("auto", "cpu, cuda, cuda:N or auto (CUDA when available).")
    devices: str | None = _opt(
        None,
        "Run one engine per device behind one queue: all (every GPU), 0,1 (GPU indices) or device "
        "names (cuda:0,cuda:1; cpu,cpu for tests); default: the one --device.",
    )
    dtype: str = _opt(
        "auto",
        "fp32, fp16, bf16, fp8 or auto. auto on CUDA: bf16 for fast embedders, else fp16 (never fp8). "
        "auto on a CPU: bf16 where the CPU has bf16 units (avx512_bf16, amx_bf16, Arm bf16) and bf16 "
        "passes the accuracy gate against fp32 on a calibration sample at load and runs it faster; "
        "else fp32. fp8 (e4m3 matrix products; the fast backend on CUDA only) is checked the same way "
        "and served only if it passes; otherwise auto's half precision. Verdicts are cached under "
        "--cache-dir; /info's precision says what was served and why.",
    )
    calibration: str | None = _opt(
        None,
        "Text file (UTF-8, one text a line) that the accuracy gate at load (--dtype fp8, or auto on "
        "a CPU) compares on; default: the built-in multilingual sample.",
    )
    cache_dir: str = _opt(
        "~/.cache/m3engine",
        "Directory for what a load can reuse: the accuracy gate's verdict (fp8, auto on a CPU) per "
        "weights, GPU or CPU model, and version.",
    )
    max_length: int | None = _opt(
        None, "Token limit for passages and (query, passage) pairs; default: the model's."
    )
    query_max_length: int | None = _opt(
        None,
        "Token limit for queries; default: max_length (embedders) or 3/4 of it (rerankers, FlagReranker).",
    )
    query_instruction: str = _opt("", "Prefix added to every query before embedding (e.g. 'query: ').")
    max_batch_tokens: int | None = _opt(
        None,
        "Token budget of one forward pass (padded tokens for padded backends); default 16384 on a "
        "GPU, 4096 on a CPU (larger batches ran slower there: docs/performance.md).",
    )
    max_batch_size: int = _opt(256, "Most texts in one forward pass.")
    warmup: bool = _opt(
        True,
        "At load (before a server is ready), prepare every batch shape within max_batch_tokens, "
        "max_batch_size and max_length: compile the kernels, capture the CUDA graphs, fill the "
        "memory pools with the largest batch (so an out-of-memory shows at start). CUDA only; "
        "--no-warmup starts sooner and the first batches of each shape pay instead.",
    )
    fallback: str | None = _opt(
        None,
        "cpu: the server keeps a CPU copy of the model ready (its fastest CPU path, as --backend auto "
        "and --dtype auto pick it on the CPU) and sends batches to it while no device of --device / "
        "--devices is healthy or the queue waits past --fallback-after-s; /ready and /info then say "
        "degraded. Default: none.",
    )
    fallback_after_s: float = _opt(
        5.0,
        "With --fallback: once the oldest queued text has waited this long, the fallback takes "
        "batches too (the primary is stuck or overloaded).",
    )
    fallback_batch_tokens: int = _opt(
        2048,
        "With --fallback: the token budget of one forward pass on the fallback (a CPU pass of "
        "--max-batch-tokens would hold its requests for seconds).",
    )
    device_probe_s: float = _opt(
        5.0,
        "Seconds between checks of a device taken out after a device error (--devices, --fallback): "
        "a one-text forward pass; the device takes batches again once one succeeds.",
    )

    def public(self) -> dict[str, Any]:
        """The settings as shown in /info and logs, secrets redacted."""
        return redacted(self)

    @property
    def batch_tokens(self) -> int:
        """max_batch_tokens as a load resolved it for its device (an Engine's settings always have it)."""
        if self.max_batch_tokens is None:
            raise ValueError("max_batch_tokens is resolved when a model loads (Engine.from_settings)")
        return self.max_batch_tokens

    def check(self) -> None:
        """Refuse settings that cannot run (InputError), before any weights load."""
        if (self.fallback or "none").strip().lower() not in ("none", "cpu"):
            raise InputError(f"--fallback takes cpu or none; got {self.fallback!r}")
        for name in ("fallback_after_s", "fallback_batch_tokens", "device_probe_s"):
            if not getattr(self, name) > 0:
                raise InputError(f"--{name.replace('_', '-')} must be > 0")

    @property
    def fallback_device(self) -> str | None:
        """The device of --fallback's standby backend; None without one."""
        chosen = (self.fallback or "none").strip().lower()
        return None if chosen == "none" else chosen


def redacted(settings: Any) -> dict[str, Any]:
    """A settings dataclass as a dict for /info and logs: secret fields show as '***' when set."""
    out = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.metadata.get("secret") and value:
            value = "***"
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True)
class ServerSettings:
    """`m3engine serve`: how the server listens, admits and protects (the models' are EngineSettings)."""

    host: str = _opt("127.0.0.1", "Address to bind; 0.0.0.0 exposes the server to the network.")
    port: int = _opt(8080, "TCP port.")
    frontends: int | None = _opt(
        None,
        "HTTP frontend processes, or auto: on CUDA the CPUs this process may use (its cgroup quota) "
        "less four for the engine process and its threads, on the CPU one. Above 1, one engine "
        "process runs the models and batches for all of them; every frontend admits against the "
        "whole server's request and token budgets. /info shows the number chosen.",
    )
    reranker: str | None = _opt(None, "A reranker (hub id or path) to serve beside --model.")
    extra_models: tuple[str, ...] = _opt((), "More models to serve, comma-separated; routed by `model`.")
    served_model_name: tuple[str, ...] = _opt(
        (),
        "Names clients may send as `model` for --model, comma-separated (vLLM's flag); the first is "
        "the name answers and /v1/models report. TARGET=NAME names another served model instead "
        "(TARGET: its hub id, path or last path component), e.g. bge-reranker-v2-m3=reranker.",
    )
    api_keys: tuple[str, ...] = _opt(
        (),
        "API keys (comma-separated); when set, every route but /live and /ready "
        "needs `Authorization: Bearer KEY`.",
        secret=True,
    )
    cors_origins: tuple[str, ...] = _opt(
        (), "Origins allowed by CORS (comma-separated); CORS is off when empty."
    )
    max_request_bytes: int = _opt(4 * 1024 * 1024, "Largest request body accepted; larger gets 413.")
    max_inputs_per_request: int = _opt(1024, "Most texts (or documents) in one request; more gets 422.")
    max_concurrent_requests: int = _opt(512, "Requests admitted at once (queued or running); more gets 429.")
    max_queued_tokens: int = _opt(262144, "Tokens admitted at once (queued or running); more gets 429.")
    max_answer_bytes: int = _opt(
        512 * 1024 * 1024,
        "Memory admitted at once for answers (outputs and their JSON), over all requests; a request "
        "whose answer alone is larger gets 413, one that does not fit now 429.",
    )
    header_timeout_s: float = _opt(
        10.0, "Seconds a client has to send a request's headers; then 408 and the connection closes."
    )
    body_timeout_s: float = _opt(
        30.0, "Seconds a client has to send a request's body once its headers came; then 408."
    )
    keep_alive_s: float = _opt(5.0, "Seconds an idle keep-alive connection stays open.")
    max_connections: int = _opt(
        1024, "Open connections per server process; one more is answered 503 and closed."
    )
    deadline_s: float = _opt(
        30.0, "Longest a request may wait for its batch; then 503. X-Request-Timeout may lower it."
    )
    short_query_tokens: int = _opt(
        64, "Sequences up to this many tokens go to the short lane (never behind bulk)."
    )
    tokenizer_workers: int = _opt(2, "Threads that tokenize requests while the model runs.")
    shutdown_timeout: float = _opt(
        30.0, "On SIGTERM, seconds to let in-flight requests finish before exiting."
    )
    exit_on_worker_death: bool = _opt(
        True, "Exit with code 3 when a model's worker dies (after /ready turned 503), to be restarted."
    )
    public_metrics: bool = _opt(False, "Serve /metrics without an API key.")
    gc_freeze: bool = _opt(
        True,
        "After start-up, move every object into the garbage collector's permanent generation "
        "(gc.freeze) in every server process, so that full collections no longer traverse the "
        "start-up heap: they stopped each process for tens of ms under load.",
    )
    slow_callback_ms: float = _opt(
        0.0,
        "A diagnostic: above 0, every server process runs its event loop in asyncio's debug mode and "
        "logs each callback or task step that holds the loop longer than this (debug mode costs CPU).",
    )
    log_level: str = _opt("info", "debug, info, warning or error; logs are JSON lines with request ids.")

    def public(self) -> dict[str, Any]:
        return redacted(self)

    def check(self) -> None:
        """Refuse settings that cannot be served (InputError: the CLI's clean exit 2)."""
        if self.cors_origins and "*" in self.cors_origins and self.api_keys:
            raise InputError(
                "--cors-origins '*' with API keys would let any site use the keys; list the origins"
            )
        if self.frontends is not None and self.frontends < 1:
            raise InputError("--frontends must be 1 or more (or auto)")
        for name in (
            "max_answer_bytes",
            "max_connections",
            "header_timeout_s",
            "body_timeout_s",
            "keep_alive_s",
        ):
            if not getattr(self, name) > 0:
                raise InputError(f"--{name.replace('_', '-')} must be > 0")


def _parse(name: str, kind: str, raw: str) -> Any:
    base = kind.replace(" | None", "")
    if base in ("int", "float"):
        if base != kind and raw.strip().lower() == "auto":  # an optional number: None picks it
            return None
        try:
            return int(raw) if base == "int" else float(raw)
        except ValueError:
            flag, env = "--" + name.replace("_", "-"), ENV_PREFIX + name.upper()
            raise InputError(f"{flag} / {env} must be a number ({base}); got {raw!r}") from None
    if base == "bool":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if base.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any] = EngineSettings) -> None:
    """One --flag per settings field; the help names its environment variable."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata.get('help', '')} [env {env}; default {f.default!r}]"
        if str(f.type).startswith("tuple"):
            parser.add_argument(
                flag, dest=f.name, default=None, action="append", metavar="A,B", help=help_text
            )
        elif str(f.type) == "bool":
            parser.add_argument(
                flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def from_sources(
    cls: type[Any], cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Any:
    """Build settings from CLI values (None = not given), then the environment, then the defaults."""
    cli = cli or {}
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        raw = cli.get(f.name)
        if raw is None:
            raw = env.get(ENV_PREFIX + f.name.upper())
        if isinstance(raw, list):  # a repeated flag: --extra-models a --extra-models b,c
            raw = ",".join(raw)
        if raw is not None:
            values[f.name] = _parse(f.name, str(f.type), raw) if isinstance(raw, str) else raw
    return cls(**values)
