"""How many CPUs a cgroup CPU quota lets this process use (containers: Docker `--cpus`, Kubernetes limits).

A container limited to 2 CPUs on a 64-core host still sees 64 in `os.sched_getaffinity`; the quota
is in the cgroup's `cpu.max` (v2: "150000 100000" is 1.5 CPUs, "max 100000" none) or
`cpu.cfs_quota_us` / `cpu.cfs_period_us` (v1). Rust's `available_parallelism`, which sizes the
tokenizers' Rayon pool, reads the same files; so the engine sizes its own tokenizer threads and
text pieces by what the pool really has. Every cgroup from the process's own up to the root counts
(a parent's quota caps its children); the smallest wins, rounded up to whole CPUs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def _v2_dirs(root: Path, self_cgroup: Path) -> list[Path]:
    """The process's cgroup v2 directory and its ancestors up to `root` (just `root` if unknown)."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return [root]
    path = next((line[3:] for line in lines if line.startswith("0::")), "/")
    dirs = [root]
    for part in (p for p in path.split("/") if p):
        dirs.append(dirs[-1] / part)
    return dirs


def _v2_limit(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_limit(root: Path) -> float | None:
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpu_quota(root: Path | None = None, self_cgroup: Path | None = None) -> int | None:
    """Whole CPUs the tightest cgroup quota allows (at least 1), or None where no quota is set."""
    root = root or CGROUP_ROOT
    self_cgroup = self_cgroup or SELF_CGROUP
    limits = [x for x in (_v2_limit(d) for d in _v2_dirs(root, self_cgroup)) if x is not None]
    v1 = _v1_limit(root)
    if v1 is not None:
        limits.append(v1)
    return max(1, math.ceil(min(limits))) if limits else None


def available_cpus() -> int:
    """This process's CPU affinity, within its cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(cpus, cpu_quota() or cpus)
