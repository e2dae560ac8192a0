"""cgroup CPU quotas read the way Rust's available_parallelism reads them (cpu_quota.py), on fake trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from m3engine import cpu_quota, pipeline, tokenization


def _tree(tmp_path: Path, cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text(cgroup)
    return root, self_cgroup


def test_v2_quota_rounds_up_and_the_tightest_ancestor_wins(tmp_path: Path) -> None:
    root, me = _tree(
        tmp_path,
        "0::/kubepods/pod1/c1\n",
        {
            "cpu.max": "max 100000\n",
            "kubepods/cpu.max": "400000 100000\n",
            "kubepods/pod1/cpu.max": "150000 100000\n",  # 1.5 CPUs: 2 threads' worth
            "kubepods/pod1/c1/cpu.max": "max 100000\n",
        },
    )
    assert cpu_quota.cpu_quota(root, me) == 2


def test_no_quota_anywhere_is_none(tmp_path: Path) -> None:
    files = {"cpu.max": "max 100000\n", "user.slice/cpu.max": "max 100000"}
    root, me = _tree(tmp_path, "0::/user.slice\n", files)
    assert cpu_quota.cpu_quota(root, me) is None
    assert cpu_quota.cpu_quota(tmp_path / "missing", tmp_path / "missing-self") is None


def test_v1_quota_and_a_fraction_of_one_cpu(tmp_path: Path) -> None:
    root, me = _tree(
        tmp_path,
        "4:cpu,cpuacct:/docker/abc\n",
        {"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"},
    )
    assert cpu_quota.cpu_quota(root, me) == 1
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no quota"
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
    if len(os.sched_getaffinity(0)) >= 2:  # without the quota: the affinity's count
        (root / "cpu.max").write_text("max 100000\n")
        assert cpu_quota.available_cpus() == len(os.sched_getaffinity(0))
        assert pipeline.default_threads([100] * 50) == min(4, len(os.sched_getaffinity(0)))
