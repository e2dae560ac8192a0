"""How many CPUs a cgroup CPU quota lets this process use (containers: Docker `--cpus`, Kubernetes limits).

A container limited to 2 CPUs on a 64-core host still sees 64 in `os.sched_getaffinity`; the quota
is in the cgroup's `cpu.max` (v2: "150000 100000" is 1.5 CPUs, "max 100000" none) or
`cpu.cfs_quota_us` / `cpu.cfs_period_us` (v1). Rust's `available_parallelism`, which sizes the
tokenizers' Rayon pool, reads the same files the same way: every cgroup from the process's own up
to the mount's top counts (a parent's quota caps its children), the smallest wins, rounded down to
whole CPUs (at least 1). So the engine sizes its tokenizer threads and text pieces by the pool's
real size.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
V1_MOUNTS = ("cpu", "cpu,cpuacct")  # where a v1 hierarchy with the cpu controller is mounted


def _own_paths(self_cgroup: Path) -> tuple[str, str]:
    """(v2 path, v1 cpu-controller path) from /proc/self/cgroup; "/" where not listed."""
    v2 = v1 = "/"
    for line in (_read(self_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _up_from(base: Path, path: str) -> list[Path]:
    """`base`/`path` and each of its ancestors up to `base` (".." parts are skipped)."""
    dirs = [base]
    for part in (p for p in path.split("/") if p and p != ".."):
        dirs.append(dirs[-1] / part)
    return dirs


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def _limits(root: Path, self_cgroup: Path) -> list[float]:
    v2_path, v1_path = _own_paths(self_cgroup)
    limits = []
    for directory in _up_from(root, v2_path):
        fields = (_read(directory / "cpu.max") or "").split()
        if len(fields) >= 2 and fields[0] != "max" and (limit := _ratio(fields[0], fields[1])):
            limits.append(limit)
    for mount in V1_MOUNTS:
        for directory in _up_from(root / mount, v1_path):
            quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
            if quota is not None and period is not None and (limit := _ratio(quota, period)):
                limits.append(limit)
    return limits


def cpu_quota(root: Path | None = None, self_cgroup: Path | None = None) -> int | None:
    """Whole CPUs the tightest cgroup quota allows (rounded down, at least 1), None where none is set."""
    limits = _limits(root or CGROUP_ROOT, self_cgroup or SELF_CGROUP)
    return max(1, int(min(limits))) if limits else None


@functools.cache
def available_cpus() -> int:
    """This process's CPU affinity, within its cgroup quota (read once: the files cost ~0.2 ms)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(cpus, cpu_quota() or cpus)
