"""The names a served model answers to: `--served-model-name` aliases, else its hub id or the last
component of its path. Answers, /v1/models and errors show these, never a directory of the server."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import PurePath

from m3engine.errors import InputError


def public_name(model: str) -> str:
    """A hub id (`BAAI/bge-m3`) as given; a local directory by its last component."""
    if os.path.isabs(model) or model.startswith(("./", "../", "~")) or os.path.isdir(model):
        return PurePath(model).name
    return model


def plain_names(model: str) -> tuple[str, ...]:
    """What a request may send without aliases: the name as given, or its last path component."""
    return tuple(dict.fromkeys((public_name(model), PurePath(model).name)))


def assign_aliases(models: Sequence[str], aliases: Sequence[str]) -> list[tuple[str, ...]]:
    """Each served model's aliases, in order. A plain alias names the first model (--model);
    `TARGET=NAME` the model whose name or last path component is TARGET."""
    out: list[list[str]] = [[] for _ in models]
    for entry in aliases:
        target, sep, alias = entry.rpartition("=")
        alias = alias.strip()
        if not alias:
            raise InputError(f"--served-model-name entry {entry!r} has an empty name")
        index = _target(models, target.strip()) if sep else 0
        if index is None:
            served = ", ".join(public_name(m) for m in models)
            raise InputError(
                f"--served-model-name {entry!r}: no served model is called {target.strip()!r}; "
                f"served: {served}"
            )
        if models:
            out[index].append(alias)
    taken: dict[str, int] = {}
    for index, names in enumerate(out):
        for name in names or plain_names(models[index]):
            other = taken.setdefault(name, index)
            if other != index and (names or out[other]):  # two models sharing a basename is older
                raise InputError(f"--served-model-name: {name!r} would name two models; give each its own")
    return [tuple(dict.fromkeys(names)) for names in out]


def names_of(model: str, aliases: Sequence[str]) -> tuple[str, ...]:
    """The names a model answers to, the one it reports first. Aliases replace the plain names,
    as vLLM's --served-model-name does, so that only chosen names are shown."""
    return tuple(aliases) or plain_names(model)


def _target(models: Sequence[str], target: str) -> int | None:
    for index, model in enumerate(models):
        if target in (model, *plain_names(model)):
            return index
    return None
