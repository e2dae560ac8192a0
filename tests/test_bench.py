"""`m3engine bench` end to end on a 2-layer model of the synthetic layout, on the CPU (a smoke test:
the numbers mean nothing here; the reports, the baseline and the accuracy check must all work)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3engine.bench.report import write
from m3engine.bench.runner import BenchConfig, run
from m3engine.bench.synthetic import Architecture, _config

TINY = Architecture(layers=2, hidden=64, heads=4, ffn=128, vocab=1000, positions=8194)


def _config_for(model: str) -> BenchConfig:
    return BenchConfig(
        synthetic=model,
        device="cpu",
        dtype="fp32",
        latency_lengths=(16,),
        batch_sizes=(2,),
        passages=12,
        long_docs=0,
        rerank_passages=6,
        accuracy_texts=12,
        repeats=1,
        latency_repeats=2,
        arch=TINY,
    )


def test_synthetic_config_is_bge_m3s_architecture() -> None:
    config = _config(Architecture(), reranker=False)
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]) == (
        24,
        1024,
        16,
    )
    assert (config["vocab_size"], config["max_position_embeddings"], config["intermediate_size"]) == (
        250002,
        8194,
        4096,
    )


def test_bench_embedder_reports(tmp_path: Path) -> None:
    report = run(_config_for("bge-m3"))
    assert report["latency"][0]["tokens"] == 16
    assert report["passages"]["tokens"] > 12 * 8
    accuracy = report["accuracy"]
    assert accuracy["dense_cos_min"] > 0.99999 and accuracy["sparse_top10_overlap_mean"] == 1.0
    assert accuracy["colbert_cos_min"] > 0.9999
    paths = write(report, tmp_path, "m3")
    assert json.loads(paths[0].read_text())["model"] == "bge-m3"
    assert "| 16 |" in paths[1].read_text()


def test_bench_reranker_reports(tmp_path: Path) -> None:
    report = run(_config_for("bge-reranker-v2-m3"))
    assert report["rerank"]["pairs"] == 6
    assert report["accuracy"]["spearman"] > 0.999
    md = write(report, tmp_path, "rr")[1].read_text()
    assert "one query" in md


@pytest.mark.parametrize("argv", [["--tiny", "--device", "cpu", "--synthetic", "nope"]])
def test_cli_rejects_unknown_model(argv: list[str]) -> None:
    from m3engine.bench.cli import main

    with pytest.raises(SystemExit):
        main(argv)
