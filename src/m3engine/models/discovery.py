"""Find a model's files: a local directory, or a hub id resolved through huggingface_hub's cache."""

from __future__ import annotations

import os
from pathlib import Path

from m3engine.errors import ModelNotFoundError


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def resolve_model_path(name_or_path: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """Return the local directory holding the model's files.

    A path that exists is used as is. Anything else is taken as a hub id: first looked up in the
    local cache, then downloaded unless HF_HUB_OFFLINE is set.
    """
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return local.resolve()
    if local.exists():
        raise ModelNotFoundError(
            f"model path {str(local)!r} is a file; pass the directory that holds config.json"
        )

    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        raise ModelNotFoundError(
            f"no local directory {str(local)!r}, and hub ids need huggingface_hub, which is not "
            "installed: `pip install 'm3engine[torch]'`, or pass a local directory"
        ) from None

    cache = cache_dir or os.environ.get("HF_HUB_CACHE") or HF_HUB_CACHE
    looked = f"no local directory {str(local)!r}; hub id {name_or_path!r} not in the cache at {cache}"
    try:
        return Path(
            snapshot_download(name_or_path, revision=revision, cache_dir=cache, local_files_only=True)
        )
    except Exception as cached_error:
        if _offline():
            raise ModelNotFoundError(
                f"model {name_or_path!r} not found ({looked}, and HF_HUB_OFFLINE is set). "
                "Pass a local directory with the model's files, or download it first with "
                f"`huggingface-cli download {name_or_path}` on a machine with network access."
            ) from cached_error
    try:
        return Path(snapshot_download(name_or_path, revision=revision, cache_dir=cache))
    except Exception as error:
        raise ModelNotFoundError(
            f"model {name_or_path!r} not found ({looked}; download failed: {type(error).__name__}). "
            "Check the hub id, your network and HF_TOKEN, or pass a local directory."
        ) from error
