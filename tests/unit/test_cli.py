from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m3engine import Engine
from m3engine.cli.main import main
from tests.texts import MULTILINGUAL

TEXTS = MULTILINGUAL[:6]


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    txt = tmp_path / "in.txt"
    txt.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)), encoding="utf-8"
    )
    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": TEXTS}), parquet)
    return {"txt": txt, "jsonl": jsonl, "parquet": parquet}


def test_embed_to_each_format_matches_the_engine(
    bge_m3: Engine, bge_m3_dir: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    expected = bge_m3.embed(TEXTS, sparse=True, colbert=True)
    model = ["--model", str(bge_m3_dir), "--device", "cpu"]

    out_jsonl = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "embed",
                "--input",
                str(inputs["txt"]),
                "--sparse",
                "--colbert",
                "--output",
                str(out_jsonl),
                "--chunk-size",
                "4",
                *model,
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(len(TEXTS)))
    np.testing.assert_allclose(rows[3]["dense"], expected[3].dense, atol=1e-6)
    assert rows[3]["sparse"]["indices"] == expected[3].sparse.indices.tolist()
    assert np.asarray(rows[3]["colbert"]).shape == expected[3].colbert.shape

    out_parquet = tmp_path / "out.parquet"
    assert (
        main(
            [
                "embed",
                "--input",
                str(inputs["parquet"]),
                "--field",
                "body",
                "--sparse",
                "--colbert",
                "--output",
                str(out_parquet),
                "--chunk-size",
                "4",
                *model,
            ]
        )
        == 0
    )
    table = pq.read_table(out_parquet).to_pylist()  # the corpus job's columns: the row number as id
    assert len(table) == len(TEXTS) and [r["id"] for r in table] == list(range(len(TEXTS)))
    np.testing.assert_allclose(table[5]["dense"], expected[5].dense, atol=1e-6)
    assert table[5]["sparse_indices"] == expected[5].sparse.indices.tolist()
    assert np.asarray(table[5]["colbert"]).shape == expected[5].colbert.shape

    out_npy = tmp_path / "out.npy"
    assert main(["embed", "--input", str(inputs["jsonl"]), "--output", str(out_npy), *model]) == 0
    np.testing.assert_allclose(np.load(out_npy), np.stack([e.dense for e in expected]), atol=1e-6)


def test_bad_input_exits_2_with_a_message(
    bge_m3_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text("one\n\nthree\n", encoding="utf-8")
    assert main(["embed", "--input", str(blank), "--model", str(bge_m3_dir)]) == 2
    assert "input 1 is empty" in capsys.readouterr().err
    assert (
        main(
            [
                "embed",
                "--text",
                "x",
                "--sparse",
                "--output",
                str(tmp_path / "o.npy"),
                "--model",
                str(bge_m3_dir),
            ]
        )
        == 2
    )
    assert ".npy holds the dense matrix only" in capsys.readouterr().err


def test_rerank_prints_a_ranking(
    reranker: Engine, reranker_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = MULTILINGUAL[:5]
    args = ["rerank", "--model", str(reranker_dir), "--dtype", "fp32", "--query-text", "What is BGE-M3?"]
    args += ["--top-n", "3"]  # fp32 as the fixture: auto may pick bf16 on this CPU
    assert main([*args, *(x for d in docs for x in ("--document", d))]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = reranker.rerank("What is BGE-M3?", docs, top_n=3)
    assert [r["index"] for r in rows] == [e.index for e in expected]
    assert [r["rank"] for r in rows] == [1, 2, 3] and rows[0]["document"] == docs[expected[0].index]


def test_console_script_info(bge_m3_dir: Path) -> None:
    script = Path(sys.executable).parent / "m3engine"
    done = subprocess.run(
        [str(script), "info", "--model", str(bge_m3_dir), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    info = json.loads(done.stdout)
    assert info["kind"] == "bge-m3" and info["colbert_dim"] == 32 and info["max_length"] == 128
    assert info["backend"] == "reference" and info["dtype"] == "fp32"


def test_a_bad_text_in_a_later_chunk_is_named_by_its_place_and_nothing_is_written(
    bge_m3_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("one\ntwo\nthree\nfour\n\nsix\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["embed", "--input", str(source), "--output", str(out), "--chunk-size", "2"]
    assert main([*args, "--model", str(bge_m3_dir)]) == 2
    assert "input 4 is empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [source]  # no output, no partial file


def test_too_long_with_truncation_off_names_the_global_index(
    bge_m3_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.texts import LONG

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(t) + "\n" for t in ["a", "b", "c", LONG]), encoding="utf-8")
    args = ["embed", "--input", str(source), "--output", str(tmp_path / "o.jsonl"), "--chunk-size", "2"]
    assert main([*args, "--no-truncate", "--model", str(bge_m3_dir)]) == 2
    assert "input 3 has" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-batch-size", "abc"], "--max-batch-size / M3ENGINE_MAX_BATCH_SIZE must be a number"),
        (["--chunk-size", "0"], "--chunk-size must be >= 1"),
        (["--device", "gpu"], "unknown device 'gpu'"),
        (["--output", "/no/such/folder/out.jsonl"], "does not exist"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    bge_m3_dir: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["embed", "--text", "x", "--model", str(bge_m3_dir), *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_float16_colbert_rows_are_written(tmp_path: Path, suffix: str) -> None:
    """A bf16/fp16 encoder's ColBERT rows are float16: Parquet keeps its float32 column, JSONL floats."""
    from m3engine.cli.files import EmbeddingWriter
    from m3engine.distributed.table import Outputs, embedding_table
    from m3engine.results import Embedding

    rows = np.array([[0.5, -0.25], [0.125, 1.0]], dtype=np.float16)
    record = Embedding(index=0, num_tokens=3, truncated=False, dense=np.ones(2, np.float32), colbert=rows)
    if suffix == ".parquet":  # every Parquet output is the corpus job's table
        outputs = Outputs(dense=True, sparse=None, colbert=True, dense_dim=2, colbert_dim=2)
        pq.write_table(embedding_table([0], [record], outputs, pa.int64()), tmp_path / "out.parquet")
        table = pq.read_table(tmp_path / "out.parquet")
        assert table.schema.field("colbert").type == pa.list_(pa.list_(pa.float32(), 2))
        got = table.to_pylist()[0]["colbert"]
    else:
        path = tmp_path / "out.jsonl"
        writer = EmbeddingWriter(path)
        writer.write([record])
        writer.close()
        got = json.loads(path.read_text().splitlines()[0])["colbert"]
    assert got == rows.astype(np.float32).tolist()
