"""The built-in multilingual sample, and a user's calibration file, as texts.

sample_texts.txt holds 84 sentences in 25 languages and 12 scripts (news, questions, medicine,
code, commerce). Texts are seeded random concatenations of them, so a few hundred texts of
realistic length and language mix come from a small file. It lives in the core layer because both
deploy/ (`m3engine build`, `validate`) and the engine's fp8 check at load (precision/) draw from it.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np

from m3engine.errors import InputError


def sample_sentences() -> list[str]:
    text = resources.files("m3engine.accuracy").joinpath("sample_texts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def compose(sentences: list[str], count: int, per_text: int, seed: int) -> list[str]:
    """`count` texts of `per_text` sentences each, drawn with a seeded generator."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sentences), size=(count, per_text))
    return [" ".join(sentences[i] for i in row) for row in picks.tolist()]


def calibration_texts(count: int = 64, per_text: int = 8) -> list[str]:
    """The built-in calibration set: other draws than validation's (seed), so the gate is not fitted."""
    return compose(sample_sentences(), count, per_text, seed=21)


def read_lines(path: str) -> list[str]:
    """A calibration file: one text per line, blank lines skipped."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(
            f"--calibration {path!r} could not be read ({error}); give a UTF-8 text file, one text a line"
        ) from error
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    if len(texts) < 2:
        raise InputError(
            f"--calibration {path!r} holds {len(texts)} text(s); give at least 2 (one a line), "
            "or leave it out for the built-in sample"
        )
    return texts


def fingerprint(texts: list[str]) -> str:
    """sha256 of the texts, so a cached verdict is tied to the sample it was measured on."""
    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()
