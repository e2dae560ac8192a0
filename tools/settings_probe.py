"""Engine settings taken in turn in one process: `Engine.embed` on the bench's bulk workloads per setting.

    PYTHONPATH=src python3 tools/settings_probe.py --tokenizer TOKENIZER_DIR [--settings b16k,b32k] \
        [--device cuda] [--json OUT]

The settings are taken in turn, round after round (drift falls on all alike), on the bench's
workloads: 2,000 mixed passages and 24 long documents, dense and all three outputs. Prints tokens/s
(median of the rounds). On the CPU (`--tiny`, a 1-layer model) it is a smoke run of the probe itself.
With `--device-only` each workload is tokenized once, and what is timed is `pipeline.run_planned` of
its inputs: batches planned over the whole list (longest first, under the setting's budget, re-planned
per setting), each launched before the one before it is collected, the collecting thread's copy-outs
and sparse vectors included, no tokenization, no pipeline, the collector not paused. For settings
that change device work (att-NAME, gNk, bNk, fN-sM); `pN` and `gc-on` change nothing there.

- `fN-sM`: `pipeline.Collector.FINISHING` = N batches may wait for the collecting thread before the
  engine thread (which launches) waits for the oldest; each of them keeps its pinned slot
  (host_ring.py) until it is copied out, so a deeper queue needs more slots (M, `HostRing(slots=M)`);
- `bNk`: a token budget per batch (`max_batch_tokens`) of N x 1,024 (the default is 16 k);
- `att-NAME`: the Triton varlen attention kernel's tiles `varlen_attention.CONFIGS[NAME]` (CUDA
  graphs already captured keep theirs: the bulk batches are eager);
- `gNk`: batches of up to N x 1,024 tokens replay CUDA graphs (`graph_max_tokens`; default 4 k);
- `pN`: the pipeline's first piece holds budget / N tokens (`pipeline.FIRST_PIECE`; default 4);
- `gc-on`: Python's cyclic collector stays on during the calls (`gcpause.ENABLED = False`; by
  default a bulk call switches it off);
parts join with "+" (`g8k+p8`); what a setting does not name stays at its default.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline_probe import _device_only  # sibling modules (tools/ is on the path)
from probe_cli import probe_parser

from m3engine.backends import host_ring
from m3engine.backends.host_ring import HostRing
from m3engine.bench.synthetic import Architecture, build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.process import gcpause
from m3engine.scheduling import pipeline
from m3engine.settings import EngineSettings
from m3engine.tasks.prepared import Prepared

COLLECTOR = {"f1-s4": (1, 4), "f2-s6": (2, 6), "f3-s8": (3, 8)}  # (FINISHING, ring slots)
BUDGETS = {f"b{k}k": k * 1024 for k in (8, 16, 24, 32, 48, 64)}
GRAPHS = {f"g{k}k": k * 1024 for k in (0, 2, 4, 8)}  # graph_max_tokens (0: no graphs)
FIRST = {f"p{k}": k for k in (2, 4, 8, 16)}  # pipeline.FIRST_PIECE
FLAGS = ("gc-on",)  # switches off: gcpause.ENABLED
DEFAULT_FINISHING, DEFAULT_FIRST = pipeline.Collector.FINISHING, pipeline.FIRST_PIECE
DEFAULT_SLOTS = host_ring.SLOTS
RINGS: dict[int, HostRing] = {}  # one ring per slot count, kept across rounds (pinning is paid once)


def known(part: str) -> bool:
    if part.startswith("att-"):  # checked here, not when the round reaches it
        from m3engine.backends.fast import varlen_attention

        return part.removeprefix("att-") in varlen_attention.CONFIGS
    return any(part in table for table in (COLLECTOR, BUDGETS, GRAPHS, FIRST)) or part in FLAGS


def use(engine: Engine, name: str, defaults: EngineSettings, graph_tokens: int) -> None:
    """Apply setting `name` (parts joined by "+"); what it does not name goes back to its default."""
    parts = name.split("+")
    pick = lambda table, default: next((table[p] for p in parts if p in table), default)  # noqa: E731
    finishing, slots = pick(COLLECTOR, (DEFAULT_FINISHING, DEFAULT_SLOTS))
    pipeline.Collector.FINISHING = finishing
    pipeline.FIRST_PIECE = pick(FIRST, DEFAULT_FIRST)
    gcpause.ENABLED = "gc-on" not in parts
    engine.settings = dataclasses.replace(defaults, max_batch_tokens=pick(BUDGETS, defaults.max_batch_tokens))
    backend: Any = engine.backend
    if getattr(backend, "ring", None) is not None:
        backend.ring = RINGS.setdefault(slots, HostRing(slots=slots))
    if getattr(backend, "graphs", None) is not None:
        backend.graphs.max_tokens = pick(GRAPHS, graph_tokens)
    if getattr(backend, "triton_attention", False):
        from m3engine.backends.fast import varlen_attention

        config = next((p.removeprefix("att-") for p in parts if p.startswith("att-")), None)
        backend.attention_config = varlen_attention.CONFIGS[config] if config else varlen_attention.DEFAULT


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--settings", default=",".join(COLLECTOR))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device-only", action="store_true", help="time the pre-tokenized batches alone")
    args = parser.parse_args()
    names = args.settings.split(",")
    unknown = [p for n in names for p in n.split("+") if not known(p)]
    if unknown:
        tables = [*COLLECTOR, *BUDGETS, *GRAPHS, *FIRST]
        parser.error(
            f"unknown settings {unknown}; known: {tables}, att-NAME and {', '.join(FLAGS)}, joined by +"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bge-m3"
        arch = Architecture(layers=1, hidden=64, heads=4, ffn=128) if args.tiny else Architecture()
        build_synthetic("bge-m3", path, args.tokenizer, arch)
        defaults = EngineSettings(model=str(path), device=args.device, dtype=args.dtype)
        engine = Engine.from_settings(defaults)
        graphs: Any = getattr(engine.backend, "graphs", None)
        graph_tokens = graphs.max_tokens if graphs is not None else 0
        maker = TextMaker(engine.tokenizer._tok)
        passages = maker.passages(args.passages)
        docs = maker.long_documents(args.long_docs)
        workloads = []  # (label, a maker of the timed call under the current setting, tokens)
        for label, texts, limit in (("passages", passages, 2048), ("long docs", docs, 8192)):
            for m3 in (False, True):
                task = engine.tasks.embed(texts, max_length=limit, sparse=m3, colbert=m3)

                def public(t: list[str] = texts, n: int = limit, h: bool = m3) -> object:
                    return engine.embed(t, max_length=n, sparse=h, colbert=h)

                def planned(task: Prepared[Any] = task) -> Callable[[], object]:
                    return _device_only(engine, task)  # planned under the setting's budget, untimed

                make = planned if args.device_only else lambda run=public: run
                workloads.append((f"{label} {'all three' if m3 else 'dense'}", make, task.num_tokens))
        times: dict[str, dict[str, list[float]]] = {n: {w[0]: [] for w in workloads} for n in names}
        for round_ in range(args.rounds + 1):  # round 0 warms up (graphs, pools, ring sizes)
            for name in names:
                use(engine, name, defaults, graph_tokens)
                for label, make, _ in workloads:
                    run = make()
                    start = time.perf_counter()
                    run()
                    if round_:
                        times[name][label].append(time.perf_counter() - start)
        result: dict[str, dict[str, float]] = {}
        for name in names:
            result[name] = {}
            cells = []
            for label, _, tokens in workloads:
                rate = tokens / statistics.median(times[name][label])
                result[name][label] = rate
                cells.append(f"{label} {rate / 1e3:5.0f} k")
            print(f"{name}: " + " | ".join(cells), flush=True)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
