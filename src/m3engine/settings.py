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
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass(frozen=True)
class EngineSettings:
    model: str = _opt("BAAI/bge-m3", "Hub id or local directory of the model.")
    kind: str | None = _opt(
        None, "Model kind (bge-m3, embedding, reranker, classifier); detected from files."
    )
    revision: str | None = _opt(None, "Hub revision (branch, tag or commit) for a hub id.")
    backend: str = _opt(
        "auto",
        "fast (packed, CUDA graphs), reference (transformers) or auto (fast on CUDA, reference on CPU).",
    )
    device: str = _opt("auto", "cpu, cuda, cuda:N or auto (CUDA when available).")
    dtype: str = _opt("auto", "fp32, fp16, bf16 or auto (fp32 on CPU; bf16 fast / fp16 reference on CUDA).")
    max_length: int | None = _opt(
        None, "Token limit for passages and (query, passage) pairs; default: the model's."
    )
    query_max_length: int | None = _opt(
        None,
        "Token limit for queries; default: max_length (embedders) or 3/4 of it (rerankers, FlagReranker).",
    )
    query_instruction: str = _opt("", "Prefix added to every query before embedding (e.g. 'query: ').")
    max_batch_tokens: int = _opt(
        16384, "Token budget of one forward pass (padded tokens for padded backends)."
    )
    max_batch_size: int = _opt(256, "Most texts in one forward pass.")

    def public(self) -> dict[str, Any]:
        """The settings as shown in /info and logs, secrets redacted."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.metadata.get("secret") and value else value
        return out


def _parse(name: str, kind: str, raw: str) -> Any:
    base = kind.replace(" | None", "")
    if base in ("int", "float"):
        try:
            return int(raw) if base == "int" else float(raw)
        except ValueError:
            flag, env = "--" + name.replace("_", "-"), ENV_PREFIX + name.upper()
            raise InputError(f"{flag} / {env} must be a number ({base}); got {raw!r}") from None
    if base == "bool":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return raw


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any] = EngineSettings) -> None:
    """One --flag per settings field; the help names its environment variable."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata.get('help', '')} [env {env}; default {f.default!r}]"
        if str(f.type) == "bool":
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
        if raw is not None:
            values[f.name] = _parse(f.name, str(f.type), raw) if isinstance(raw, str) else raw
    return cls(**values)
