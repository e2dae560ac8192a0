"""One GPU: `--devices 0` and the corpus job (in one process and on Ray) against the plain engine.

The issue's target: each within 10 % of the plain engine's tokens/s on the mixed-length passages
(BGE-M3's architecture with random weights, dense). A corpus job is compared by its steady rate
(tokens over its worker's time on shards: reading, embedding, writing Parquet); its wall-clock rate,
which adds starting the worker and loading the model, is printed beside it.
Run: pytest -m gpu -s tests/gpu/test_scaleout_gpu.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from m3engine.bench.synthetic import build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.distributed.corpus import CorpusJob, run
from m3engine.engine import Engine
from m3engine.settings import EngineSettings
from m3engine.tasks.options import EmbedOptions

pytestmark = pytest.mark.gpu
PASSAGES = 40_000  # ~10 M tokens: ~15 s of the plain engine on an H100, so a job's start-up is small


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    root = tmp_path_factory.mktemp("scaleout")
    model = build_synthetic("bge-m3", root / "bge-m3")
    from tokenizers import Tokenizer

    texts = TextMaker(Tokenizer.from_file(str(model / "tokenizer.json"))).passages(PASSAGES)
    with (root / "corpus.jsonl").open("w") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": i, "text": text}) + "\n")
    return model, root / "corpus.jsonl", texts


def _rate(engine: Engine, texts: list[str]) -> float:
    engine.embed(texts[:2000])  # warm: CUDA graphs, allocator
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = engine.embed(texts)
    torch.cuda.synchronize()
    return sum(r.num_tokens for r in out) / (time.perf_counter() - start)


def test_one_gpu_scaleout_paths_keep_the_plain_rate(
    corpus: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    model, source, texts = corpus
    plain = _rate(Engine.load(str(model), device="cuda"), texts)
    devices = _rate(Engine.load(str(model), devices="0"), texts)
    job = CorpusJob(str(source), str(tmp_path / "local"), EmbedOptions(), EngineSettings(model=str(model)))
    local = run(job, quiet=True)
    rates = {
        "plain": plain,
        "devices_0": devices,
        "corpus_local": local["tokens"] / local["shard_seconds"],
        "corpus_local_wall": local["tokens"] / local["seconds"],
    }
    try:
        import ray
    except ImportError:
        ray = None
    if ray is not None:
        ray.init(num_gpus=1, include_dashboard=False)
        try:
            ray_job = CorpusJob(str(source), str(tmp_path / "ray"), job.options, job.engine)
            on_ray = run(ray_job, "auto", quiet=True)
        finally:
            ray.shutdown()
        rates["corpus_ray"] = on_ray["tokens"] / on_ray["shard_seconds"]  # one GPU: one worker
        rates["corpus_ray_wall"] = on_ray["tokens"] / on_ray["seconds"]
    print("\ntokens/s on", torch.cuda.get_device_name(), {k: f"{v:,.0f}" for k, v in rates.items()})
    print("ratios to plain", {k: round(v / plain, 3) for k, v in rates.items()})
    assert devices >= 0.9 * plain
    assert rates["corpus_local"] >= 0.9 * plain
    if "corpus_ray" in rates:
        assert rates["corpus_ray"] >= 0.9 * plain
