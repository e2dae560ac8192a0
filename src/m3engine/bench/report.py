"""A run's results as JSON, a markdown table and a PNG plot (matplotlib, when installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _k(x: float) -> str:
    return f"{x / 1e3:,.0f} k"


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"## `m3engine bench` — {report['model']}, {report['config']['dtype']}",
        "",
        f"{env['device']}; torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}; "
        f'{env["date"]}. Baseline ("HF"): transformers fp16, SDPA, length-sorted batches of 32.',
        "",
    ]
    if "latency" in report:
        lines += [
            "| batch 1, tokens | fast p50 ms | fast p90 ms | HF p50 ms | HF p90 ms | speedup |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["latency"]:
            lines.append(
                f"| {r['tokens']} | {r['fast_ms_p50']:.2f} | {r['fast_ms_p90']:.2f} | {r['hf_ms_p50']:.2f} "
                f"| {r['hf_ms_p90']:.2f} | {r['speedup']:.1f}x |"
            )
        lines.append("")
    if "batch_sweep" in report:
        lines += ["| batch x 512 tokens | fast tok/s | HF tok/s | speedup |", "|---|---|---|---|"]
        for r in report["batch_sweep"]:
            lines.append(
                f"| {r['batch_size']} | {_k(r['fast_tok_s'])} | {_k(r['hf_tok_s'])} | {r['speedup']:.2f}x |"
            )
        lines.append("")
    corpora = [
        (name, report[key])
        for key, name in (("passages", "mixed passages"), ("long_docs", "long documents"))
        if key in report
    ]
    if corpora:
        lines += [
            "| text in, vectors out | texts | tokens | fast dense tok/s | fast all three tok/s "
            "| HF dense tok/s | speedup (dense / all) | all-three cost | tokenize only tok/s "
            "| peak GB beyond weights |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, c in corpora:
            lines.append(
                f"| {name} | {c['texts']} | {c['tokens']:,} | {_k(c['fast_dense_tok_s'])} "
                f"| {_k(c['fast_all_tok_s'])} | {_k(c['hf_dense_tok_s'])} "
                f"| {c['speedup_dense']:.1f}x / {c['speedup_all']:.1f}x "
                f"| {100 * c['all_over_dense_cost']:+.0f} % "
                f"| {_k(c['tokenize_only_tok_s'])} | {c['peak_activation_gb']:.2f} |"
            )
        lines.append("")
    if "rerank" in report:
        r = report["rerank"]
        lines += [
            "| rerank | pairs | fast p50 ms | fast p90 ms | HF p50 ms | fast pairs/s | HF pairs/s "
            "| speedup |",
            "|---|---|---|---|---|---|---|---|",
            f"| one query | {r['pairs']} | {r['fast_ms_p50']:.2f} | {r['fast_ms_p90']:.2f} "
            f"| {r['hf_ms_p50']:.2f} "
            f"| {r['fast_pairs_s']:,.0f} | {r['hf_pairs_s']:,.0f} | {r['speedup']:.1f}x |",
            "",
        ]
    if "accuracy" in report:
        base = report.get("baseline_accuracy", {})
        lines += [
            "| accuracy against fp32 (transformers) | m3engine | HF fp16, same inputs |",
            "|---|---|---|",
        ]
        for k, v in report["accuracy"].items():
            other = f"{base[k]:.6f}" if k in base else "-"
            lines.append(f"| {k} | {v:.6f} | {other} |")
        lines.append("")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> bool:
    """Write a PNG of the run; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [k for k in ("latency", "batch_sweep", "passages", "rerank") if k in report]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        data = report[key]
        if key == "latency":
            x = [r["tokens"] for r in data]
            ax.loglog(x, [r["fast_ms_p50"] for r in data], "o-", label="m3engine fast")
            ax.loglog(x, [r["hf_ms_p50"] for r in data], "s--", label="HF fp16")
            ax.set(xlabel="tokens (batch 1)", ylabel="median latency, ms", title="latency, one text")
        elif key == "batch_sweep":
            x = [r["batch_size"] for r in data]
            ax.semilogx(x, [r["fast_tok_s"] / 1e3 for r in data], "o-", label="m3engine fast", base=2)
            ax.semilogx(x, [r["hf_tok_s"] / 1e3 for r in data], "s--", label="HF fp16", base=2)
            ax.set(xlabel="batch size (x 512 tokens)", ylabel="k tokens/s", title="throughput vs batch size")
        elif key == "passages":
            names, values = ["fast dense", "fast all 3", "HF dense"], []
            for name in ("passages", "long_docs"):
                if name in report:
                    c = report[name]
                    values.append(
                        [c["fast_dense_tok_s"] / 1e3, c["fast_all_tok_s"] / 1e3, c["hf_dense_tok_s"] / 1e3]
                    )
            for i, row in enumerate(values):
                ax.bar([j + 0.4 * i for j in range(3)], row, width=0.4, label=["passages", "long docs"][i])
            ax.set_xticks([j + 0.2 for j in range(3)], names)
            ax.set(ylabel="k tokens/s", title="text in, vectors out")
        else:
            ax.bar(["m3engine fast", "HF fp16"], [data["fast_ms_p50"], data["hf_ms_p50"]])
            ax.set(ylabel="ms", title=f"rerank 1 query x {data['pairs']} passages")
        ax.grid(True, alpha=0.3)
        ax.legend() if key != "rerank" else None
    fig.suptitle(f"{report['model']} ({report['config']['dtype']}), {report['environment']['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(report: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(report, indent=1))
    paths[1].write_text(markdown(report))
    if plot(report, out_dir / f"{stem}.png"):
        paths.append(out_dir / f"{stem}.png")
    return paths
