"""Reading texts from files and writing embeddings to files, for the CLI.

In: .txt (one text per line), .jsonl (a string or an object per line), .parquet (a string column).
Out: .jsonl (one record per text), .npy (the dense matrix only); sparse weights in the form
`--sparse-format` names (m3engine/sparse_formats.py). A .parquet output is the corpus job's
(cli/corpus.py), so that every Parquet file m3engine writes has the one layout of distributed/table.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from m3engine.errors import InputError
from m3engine.results import Embedding
from m3engine.sparse_formats import SparseFormat

READ_SUFFIXES = (".txt", ".jsonl", ".parquet")
WRITE_SUFFIXES = (".jsonl", ".npy")


def read_texts(path: Path, field: str = "text") -> list[str]:
    """All texts of a file, in order; a line or row that is not text is an error naming its place."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"input file {str(path)!r} does not exist")
    if suffix == ".txt":
        return _lines(path)
    if suffix == ".jsonl":
        return list(_read_jsonl(path, field))
    if suffix == ".parquet":
        return _read_parquet(path, field)
    raise InputError(f"cannot read {path.name}: use one of {', '.join(READ_SUFFIXES)}")


def _read_parquet(path: Path, field: str) -> list[str]:
    # pyarrow is an extra (`m3engine[parquet]`): imported here, so the other forms never need it
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            "reading .parquet needs pyarrow, which is not installed: `pip install 'm3engine[parquet]'`, "
            "or give the texts as .txt or .jsonl"
        ) from None
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{path} is not a readable Parquet file ({type(error).__name__})") from None
    if field not in table.column_names:
        raise InputError(f"{path} has no column {field!r} (columns: {table.column_names}); pass --field")
    texts: list[str] = []
    for row, value in enumerate(table.column(field).to_pylist()):
        if not isinstance(value, str):
            raise InputError(f"{path} row {row}: column {field!r} holds a {type(value).__name__}, not text")
        texts.append(value)
    return texts


def _utf8(path: Path) -> str:
    """The file's text; a file that is not UTF-8 is an error naming the line of the first bad byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputError(f"{path}:{line} is not UTF-8 text; convert the file to UTF-8 first") from None


def _lines(path: Path) -> list[str]:
    """The file's lines as a text-mode file gives them (any line end), without their line ends."""
    lines = _utf8(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()  # the end of the last line, not a line
    return lines


def _read_jsonl(path: Path, field: str) -> Iterator[str]:
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{number} is not valid JSON ({error.msg})") from None
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict) and isinstance(item.get(field), str):
            yield item[field]
        else:
            raise InputError(
                f"{path}:{number} is neither a JSON string nor an object with a {field!r} string"
            )


class EmbeddingWriter:
    """Writes Embedding records chunk by chunk to .jsonl or .npy (or JSONL to a stream).

    A file is written under a temporary name beside it and renamed only by `close(ok=True)`, so a
    failed run leaves no half-written output behind.
    """

    def __init__(self, path: Path | None, stream: IO[str] | None = None) -> None:
        self.path = path
        self.sparse = SparseFormat()  # the CLI sets the chosen form once the model is loaded
        self.suffix = path.suffix.lower() if path else ".jsonl"
        if self.suffix not in WRITE_SUFFIXES:
            raise InputError(
                f"cannot write {path}: use one of {', '.join(WRITE_SUFFIXES)}, .parquet or a folder"
            )
        if path is not None and not path.parent.is_dir():
            raise InputError(f"output folder {str(path.parent)!r} does not exist; create it first")
        self._partial = path.with_name(f".{path.name}.partial") if path else None
        self._stream = stream
        self._file: IO[str] | None = None
        self._dense: list[np.ndarray] = []

    def check_outputs(self, sparse: bool, colbert: bool) -> None:
        if self.suffix == ".npy" and (sparse or colbert):
            raise InputError(
                ".npy holds the dense matrix only; write sparse or ColBERT outputs to .jsonl or .parquet"
            )

    def write(self, records: Sequence[Embedding], offset: int = 0) -> None:
        if self.suffix == ".npy":
            self._dense.extend(r.dense for r in records if r.dense is not None)
        else:
            if self._file is None and self._partial is not None:
                self._file = self._partial.open("w", encoding="utf-8")
            out = self._file or self._stream
            assert out is not None
            for r in records:
                item = r.to_json()
                item["index"] = r.index + offset
                if r.sparse is not None:
                    item["sparse"] = self.sparse.render(r.sparse)
                out.write(json.dumps(item, ensure_ascii=False) + "\n")

    def close(self, ok: bool = True) -> None:
        """Finish the file and move it into place (ok), or throw the partial file away."""
        if self._file is not None:
            self._file.close()
        if self._partial is None or self.path is None:
            return
        if ok and self.suffix == ".npy":
            with self._partial.open("wb") as f:
                np.save(f, np.stack(self._dense).astype(np.float32) if self._dense else np.zeros((0, 0)))
        if ok and self._partial.exists():
            self._partial.replace(self.path)
        else:
            self._partial.unlink(missing_ok=True)
