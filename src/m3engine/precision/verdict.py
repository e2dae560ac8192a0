"""The gate's verdict on a reduced precision, and its cache on disk.

A verdict depends only on the weights, the device model (GPU or CPU), the software and the sample,
so it is measured once and kept under `--cache-dir`: a second load skips the comparison (two full
passes over the sample, one of them in fp32). The key hashes every one of those. A cache file that
cannot be read or does not hold a verdict is ignored (the comparison runs again and overwrites it):
a cache must never stop a model from loading.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3engine.version import __version__

log = logging.getLogger("m3engine.precision")

# The files whose bytes are the model: a changed checkpoint under the same path is a new key.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx")


@dataclass(frozen=True)
class Verdict:
    requested: str  # the dtype setting: fp8, or auto (on a CPU)
    served: str  # the dtype the model runs in: the candidate if the gate passed
    passed: bool
    reason: str  # one line for the log and /info
    metrics: dict[str, float] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)  # Gate.check's rows
    cached: bool = False  # read from the cache, not measured by this load
    # the reduced precision tried against fp32 (fp8, bf16); None where none was worth trying
    # (a CPU without bf16 units), so fp32 is served without a comparison
    candidate: str | None = None

    @property
    def fell_back(self) -> bool:
        """A candidate was tried and lost: the model runs slower than it might (the fallback gauge)."""
        return self.candidate is not None and not self.passed

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Verdict:
        """A verdict read back; ValueError when `data` is not one (a corrupt or foreign file)."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        strings = ("requested", "served", "reason")
        if not all(isinstance(data.get(k), str) for k in strings) or not isinstance(data.get("passed"), bool):
            raise ValueError("requested, served, reason or passed missing or of the wrong type")
        metrics, checks = data.get("metrics", {}), data.get("checks", {})
        if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) for v in metrics.values()):
            raise ValueError("metrics is not a mapping of numbers")
        if not isinstance(checks, dict):
            raise ValueError("checks is not a mapping")
        candidate = data.get("candidate", data["requested"])
        if not isinstance(candidate, str):
            raise ValueError("candidate is not a dtype name")
        return cls(
            requested=data["requested"],
            served=data["served"],
            passed=data["passed"],
            reason=data["reason"],
            metrics={k: float(v) for k, v in metrics.items()},
            checks=checks,
            cached=True,
            candidate=candidate,
        )


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(model_path: Path, device_name: str, torch_version: str, parts: dict[str, Any]) -> str:
    """sha256 over the weight files' contents, the device model, torch, m3engine and `parts` (sample...)."""
    files = sorted(p for p in model_path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    record = {
        "weights": {str(p.relative_to(model_path)): _file_digest(p) for p in files},
        "device": device_name,
        "torch": torch_version,
        "m3engine": __version__,
        **parts,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


class VerdictCache:
    def __init__(self, root: str) -> None:
        self.dir = Path(root).expanduser() / "precision"

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def load(self, key: str) -> Verdict | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return Verdict.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, UnicodeDecodeError) as error:
            log.warning("ignoring the unreadable precision verdict %s (%s); measuring again", path, error)
            return None

    def store(self, key: str, verdict: Verdict) -> None:
        """Written whole or not at all (a temporary file renamed), so a crash leaves no half verdict."""
        path = self.path(key)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**verdict.public(), "cached": False}, indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as error:
            log.warning(
                "could not cache the precision verdict in %s (%s); the next load measures again. "
                "Point --cache-dir at a writable directory to keep it.",
                self.dir,
                error,
            )
