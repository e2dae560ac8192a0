"""cgroup CPU quotas read the way Rust's available_parallelism reads them (cpu_quota.py), on fake trees."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from m3engine.process import cpu_quota
from m3engine.scheduling import pipeline
from m3engine.tokenization import tokenizer as tokenization

AFFINITY = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    cpu_quota.available_cpus.cache_clear()
    yield
    cpu_quota.available_cpus.cache_clear()


def _tree(tmp_path: Path, cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text(cgroup)
    return root, self_cgroup


def test_v2_the_tightest_quota_on_the_path_wins_rounded_down(tmp_path: Path) -> None:
    root, me = _tree(
        tmp_path,
        "0::/kubepods/pod1/c1\n",
        {
            "cpu.max": "max 100000\n",
            "kubepods/cpu.max": "250000 100000\n",  # 2.5 CPUs: the tightest, above a looser child
            "kubepods/pod1/cpu.max": "400000 100000\n",
            "kubepods/pod1/c1/cpu.max": "max 100000\n",
            "other/cpu.max": "100000 100000\n",  # not on the process's path
        },
    )
    assert cpu_quota.cpu_quota(root, me) == 2
    (root / "kubepods/cpu.max").write_text("50000 100000\n")  # half a CPU: still one
    assert cpu_quota.cpu_quota(root, me) == 1


def test_no_quota_or_a_broken_file_is_none(tmp_path: Path) -> None:
    files = {"cpu.max": "max 100000\n", "user.slice/cpu.max": "100000 0\n"}  # period 0: ignored
    root, me = _tree(tmp_path, "0::/user.slice\n", files)
    assert cpu_quota.cpu_quota(root, me) is None
    assert cpu_quota.cpu_quota(tmp_path / "missing", tmp_path / "missing-self") is None
    root2, me2 = _tree(tmp_path / "b", "0::/../x\n", {"cpu.max": "max 100000\n"})
    (tmp_path / "b" / "x").mkdir()
    (tmp_path / "b" / "x" / "cpu.max").write_text("100000 100000\n")  # outside the mount: not read
    assert cpu_quota.cpu_quota(root2, me2) is None


def test_v1_quota_in_the_process_own_cgroup(tmp_path: Path) -> None:
    files = {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",  # v1's "no quota"
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    }
    root, me = _tree(tmp_path, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n", files)
    assert cpu_quota.cpu_quota(root, me) == 3
    (root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota.cpu_quota(root, me) is None


def test_a_quota_caps_the_tokenizer_cores_and_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, me = _tree(tmp_path, "0::/\n", {"cpu.max": "100000 100000\n"})  # one CPU
    monkeypatch.setattr(cpu_quota, "CGROUP_ROOT", root)
    monkeypatch.setattr(cpu_quota, "SELF_CGROUP", me)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    assert cpu_quota.available_cpus() == 1
    assert tokenization.usable_cores() == 1
    assert pipeline.default_threads([100] * 50) == 1
    if AFFINITY >= 2:  # without the quota: the affinity's count
        (root / "cpu.max").write_text("max 100000\n")
        cpu_quota.available_cpus.cache_clear()
        assert cpu_quota.available_cpus() == AFFINITY
        assert pipeline.default_threads([100] * 50) == min(4, AFFINITY)
