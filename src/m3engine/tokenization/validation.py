"""Which inputs are texts: a list of strings, each with something to read, in valid Unicode.

Checked before anything is tokenized, so that a bad input is a 422 naming its index (the CLI's
exit 2), never the tokenizer's own error: the Rust tokenizer raises TypeError on a lone surrogate,
which became a 500.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from m3engine.errors import EmptyInputError, InvalidInputTypeError, InvalidTextError

# Text the tokenizer cannot take or that is no text at all: lone surrogates (either half; the Rust
# tokenizer raises TypeError on them) and C0 control characters other than whitespace.
_INVALID = re.compile("[\ud800-\udfff\x00-\x08\x0e-\x1f\x7f]")
# Characters that show nothing: a text of only these (and whitespace) is as empty as "" to the model.
_INVISIBLE = re.compile(
    "[\\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]*"
)


def check_texts(texts: str | Sequence[str], what: str = "input") -> list[str]:
    """A list of non-empty valid strings, or an error that names the first bad item by its index."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence):
        raise InvalidInputTypeError(f"expected a string or a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise EmptyInputError(f"the {what} list is empty; pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputTypeError(
                f"{what} {i} is a {type(text).__name__}, not a string; convert it to text first"
            )
        bad = _INVALID.search(text)
        if bad is not None:
            raise InvalidTextError(
                f"{what} {i} holds {_describe(bad.group())} at character {bad.start()}; "
                "send valid Unicode text (UTF-8, no lone surrogates, no control characters but whitespace)"
            )
        if _INVISIBLE.fullmatch(text):
            raise EmptyInputError(
                f"{what} {i} is empty or only whitespace or invisible characters; "
                "remove it or give it some text"
            )
    return list(texts)


def _describe(char: str) -> str:
    point = ord(char)
    kind = "a lone surrogate" if 0xD800 <= point <= 0xDFFF else "a control character"
    return f"{kind} (U+{point:04X})"
