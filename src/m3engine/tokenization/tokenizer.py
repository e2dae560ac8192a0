"""Validation, tokenization and the truncation policies of the reference.

Texts are encoded by the Rust `tokenizers` library in one `encode_batch` call (parallel, GIL
released). Texts over the limit are cut as content and given their special tokens by the
tokenizer's own post-processor, so every family (BERT [CLS]/[SEP], XLM-R <s>/</s></s>) is handled
by its own template.

Policies:
- single text: content cut to `max_length - specials` (what `tokenizer(text, truncation=True,
  max_length=L)` does);
- pair (reranker): FlagReranker's rule: the query alone is capped at `query_max_length` (3/4 of the
  budget by default), then only the passage is cut so that the pair fits `max_length`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tokenizers

from m3engine.errors import InputError, InputTooLongError
from m3engine.process.cpu_quota import available_cpus
from m3engine.tokenization.pair_template import read_pair_template, read_single_template
from m3engine.tokenization.source import TokenizerParts, read_parts, write_parts
from m3engine.tokenization.validation import check_texts as check_texts  # where callers find it
from m3engine.types import Encoded

CHARS_PER_TOKEN = 6  # a prefix of budget * 6 characters holds the kept tokens of most texts
# No tokenizer of these families averages this many characters per token (TEI's cap): a prefix of
# N * 250 characters holds at least N tokens, so what lies past it can be dropped before encoding.
CHARS_PER_TOKEN_CAP = 250
PIECE_CHARS = 4096  # long texts are encoded in pieces of about this size, in parallel
# Fewer texts than cores are cut finer, down to pieces of this size, so that every core gets one;
# a text is cut only when it holds more than CUT_INTO pieces of that size (2 pieces measured no
# faster than 1; where cuts are allowed only far apart it may still end in 2). Measured: `encode` of
# the bench's single texts on an H200 host (16 cores), uncut / pieces of >= 512 / >= 256 characters:
# 2,048 tokens 2,264 / 895 / 897 us, 512 tokens 822 / 496 / 331 us, 256 tokens 319 / 263 / 192 us,
# 128 tokens 136 / 132 / 134 us (cut in 2 there)
MIN_PIECE_CHARS = 256
CUT_INTO = 3
# Pre-tokenizers that cut text into words at spaces: a word's tokens do not depend on what follows it.
_WORD_SPLITTERS = {"Metaspace", "BertPreTokenizer", "Whitespace", "WhitespaceSplit", "ByteLevel"}


_PARALLELISM_OFF = {"", "0", "f", "false", "n", "no", "off"}  # what the Rust side reads as off


def usable_cores() -> int:
    """The threads the Rust pool spreads a batch over: this process's CPU affinity, within its cgroup
    CPU quota (cpu_quota.py), at most RAYON_NUM_THREADS, and 1 when TOKENIZERS_PARALLELISM turns the
    pool off (a fork's override inside the library is not seen)."""
    setting = os.environ.get("TOKENIZERS_PARALLELISM")
    if setting is not None and setting.strip().lower() in _PARALLELISM_OFF:
        return 1
    cores = available_cpus()
    threads = os.environ.get("RAYON_NUM_THREADS", "")
    return max(1, min(cores, int(threads))) if threads.isdigit() and int(threads) > 0 else cores


Joinable = Callable[[str, str], bool]


def _between_words(before: str, after: str) -> bool:
    """A space between these two characters may be a cut: both are letters or digits. Not beside
    punctuation, marks, zero-width or replacement characters, which some normalizers turn into a
    space (XLM-R's nmt_nfkc: U+200B, U+FEFF, U+FFFD, ...), so that a piece would end or start in one."""
    return before.isalnum() and after.isalnum()


def _worth_cutting(text: str, size: int) -> bool:
    """Whether `text` is cut into pieces of `size` characters: only when it holds more than CUT_INTO."""
    return len(text) > CUT_INTO * size


def _split_at_spaces(text: str, size: int, joinable: Joinable = _between_words) -> list[str]:
    """The text in consecutive pieces of at least `size` characters, each after the first starting at
    a single space between two characters that `joinable` accepts: the same words as the whole, split
    the same way, and no run of spaces (which the XLM-R normalizer collapses) is cut. A text of no
    more than CUT_INTO * size characters stays whole."""
    if not _worth_cutting(text, size):
        return [text]
    pieces, start = [], 0
    while len(text) - start > 2 * size:
        cut = text.find(" ", start + size)
        while 0 < cut < len(text) - 1 and not joinable(text[cut - 1], text[cut + 1]):
            cut = text.find(" ", cut + 1)
            if cut > start + 2 * size:  # no allowed space near: the rest stays whole (bounds the scan)
                cut = -1
        if not 0 < cut < len(text) - 1:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _splits_at_spaces(pre: dict[str, Any]) -> bool:
    """Whether a pre-tokenizer (or any step of a Sequence; steps only split further) splits at spaces."""
    if pre.get("type") == "Sequence":
        return any(_splits_at_spaces(step) for step in pre.get("pretokenizers", []))
    return pre.get("type") in _WORD_SPLITTERS and pre.get("split", True) is not False


class TextTokenizer:
    """A model's tokenizer with the truncation policies above."""

    def __init__(self, parts: TokenizerParts) -> None:
        # No truncation or padding configured: we cut ids ourselves.
        self._tok = parts.rust
        self._tok.no_truncation()
        self._tok.no_padding()
        self._post = self._tok.post_processor
        self.pad_id: int = parts.pad_id
        self.special_ids: frozenset[int] = parts.special_ids
        self.single_specials = self._post.num_special_tokens_to_add(False) if self._post else 0
        self.pair_specials = self._post.num_special_tokens_to_add(True) if self._post else 0
        self._pair_template = read_pair_template(self._tok)
        self._single_template = read_single_template(self._tok)
        self.vocab_size: int = self._tok.get_vocab_size(with_added_tokens=True)
        self._splits_at_spaces = _splits_at_spaces(json.loads(self._tok.to_str()).get("pre_tokenizer") or {})
        self.chars_per_token = CHARS_PER_TOKEN  # the first prefix's length per kept token
        self.piece_chars = PIECE_CHARS
        self.min_piece_chars = MIN_PIECE_CHARS
        self.cores = usable_cores()
        self._normalizer = self._tok.normalizer
        self._edges: dict[tuple[str, int], bool] = {}  # _edge_ok's verdicts per (character, side)

    @classmethod
    def load(cls, path: Path) -> TextTokenizer:
        """The tokenizer of the model directory `path` (source.py: an artifact's, without transformers)."""
        return cls(read_parts(path))

    def freeze(self, directory: Path) -> Path:
        """Write this tokenizer into `directory` as source.FROZEN (`m3engine build`); its path."""
        return write_parts(TokenizerParts(self._tok, self.pad_id, self.special_ids), directory)

    def _content(self, texts: list[str]) -> list[tokenizers.Encoding]:
        # `_fast`: the same ids without offsets, which we never read
        # (the bench's 128-token text: 200 -> 133 us, 2-core VM)
        return self._tok.encode_batch_fast(texts, add_special_tokens=False)

    def _joinable(self, before: str, after: str) -> bool:
        """`_between_words`, and the tokenizer's normalizer keeps each neighbour a non-empty string
        with no space at the cut's side (so the pieces normalize to the whole's words)."""
        if not _between_words(before, after):
            return False
        if self._normalizer is None:
            return True
        return self._edge_ok(before, -1) and self._edge_ok(after, 0)

    def _edge_ok(self, char: str, side: int) -> bool:
        """Whether `char` normalizes to a non-empty string without a space at index `side` (cached)."""
        key = (char, side)
        ok = self._edges.get(key)
        if ok is None:
            assert self._normalizer is not None
            normal = self._normalizer.normalize_str(char)
            ok = self._edges[key] = bool(normal) and not normal[side].isspace()
        return ok

    def piece_size(self, texts: list[str]) -> int:
        """Characters per piece: `piece_chars`, or for fewer texts than cores their characters shared
        out over the cores, but no fewer than `min_piece_chars` (below that a piece gains nothing)."""
        if len(texts) >= self.cores:
            return self.piece_chars
        share = sum(len(text) for text in texts) // self.cores
        return min(self.piece_chars, max(self.min_piece_chars, share))

    def _cuts(self, text: str, size: int) -> bool:
        """Whether `_content_in_pieces` cuts `text` into pieces of `size` characters."""
        return self._splits_at_spaces and _worth_cutting(text, size)

    def _content_in_pieces(self, texts: list[str]) -> list[tokenizers.Encoding]:
        """`_content`, with each long text cut at spaces into pieces that the Rust pool encodes in
        parallel (one 50 k-character document would otherwise take one core). Only for word-splitting
        pre-tokenizers, where a word's tokens do not depend on its neighbours."""
        size = self.piece_size(texts)
        if not any(self._cuts(text, size) for text in texts):
            return self._content(texts)  # nothing to cut: _split_at_spaces keeps these whole
        pieces = [_split_at_spaces(text, size, self._joinable) for text in texts]
        flat = self._content([piece for parts in pieces for piece in parts])
        out, start = [], 0
        for parts in pieces:
            chunk = flat[start : start + len(parts)]
            out.append(
                chunk[0] if len(chunk) == 1 else tokenizers.Encoding.merge(chunk, growing_offsets=True)
            )
            start += len(parts)
        return out

    def _finish(self, first: tokenizers.Encoding, second: tokenizers.Encoding | None) -> Encoded:
        if second is not None and self._pair_template is not None:
            return self._pair_template.build(first.ids, second.ids)
        if self._post is None:
            ids = list(first.ids) + (list(second.ids) if second else [])
            return Encoded(ids=ids)
        done = self._post.process(first, second, add_special_tokens=True)
        return Encoded(ids=list(done.ids), type_ids=list(done.type_ids))

    def encode(self, texts: list[str], max_length: int, truncate: bool = True) -> list[Encoded]:
        """Encode single texts, each to at most `max_length` ids, special tokens included.

        Texts no longer than `max_length` characters almost always fit: one Rust `encode_batch` with
        the special tokens added gives their final ids. Longer texts go through `_encode_long`, and so
        do texts that `_content_in_pieces` would cut when there are fewer texts than cores.
        """
        out: list[Encoded | None] = [None] * len(texts)
        # fewer texts than cores: one that `_content_in_pieces` would cut takes that path even when it
        # is short enough to fit whole, so that its pieces spread over the cores
        size = self.piece_size(texts)
        short = [i for i, text in enumerate(texts) if len(text) <= max_length and not self._cuts(text, size)]
        if short:
            encodings = self._tok.encode_batch_fast([texts[i] for i in short], add_special_tokens=True)
            for i, encoding in zip(short, encodings, strict=True):
                out[i] = Encoded(ids=encoding.ids)
        long = [i for i, item in enumerate(out) if item is None or len(item) > max_length]
        if long:
            self._encode_long(texts, long, max_length, truncate, out)
        return [item for item in out if item is not None]

    def _encode_long(
        self, texts: list[str], indices: list[int], max_length: int, truncate: bool, out: list[Encoded | None]
    ) -> None:
        """Content ids cut to the budget, then the special tokens; fills `out` at `indices`.

        With truncation on, a text is first cut at a space after about CHARS_PER_TOKEN characters per
        kept token: with a tokenizer that splits words at spaces, the tokens of the whole words before
        the cut are the full text's own, so a 100 k-character document costs the tokens it keeps.
        A prefix that yields too few tokens is retried once, longer by the characters per token it
        showed (texts of long pieces: rare scripts, code, numbers), and only then encoded whole.
        """
        budget = max_length - self.single_specials
        heads = [
            self._prefix(texts[i], budget * self.chars_per_token) if truncate else texts[i] for i in indices
        ]
        contents = self._content_in_pieces(heads)
        for attempt in range(2):
            short = [
                k
                for k, i in enumerate(indices)
                if len(heads[k]) < len(texts[i]) and len(contents[k]) < budget
            ]
            if not short:
                break
            if attempt == 0:  # chars per token seen so far, plus a margin
                retry = [
                    self._prefix(
                        texts[indices[k]], len(heads[k]) * budget * 5 // (4 * max(1, len(contents[k])))
                    )
                    for k in short
                ]
            else:
                retry = [texts[indices[k]] for k in short]
            for k, head, content in zip(short, retry, self._content_in_pieces(retry), strict=True):
                heads[k], contents[k] = head, content
        for k, i in enumerate(indices):
            content = contents[k]
            cut = len(content) > budget or len(heads[k]) < len(texts[i])
            if cut and not truncate:
                raise InputTooLongError(
                    f"input {i} has {len(content) + self.single_specials} tokens, over the limit of "
                    f"{max_length}; enable truncation (truncate=True, --truncate) or split the text"
                )
            out[i] = Encoded(ids=self._finish_single(content, budget), truncated=cut)

    def _finish_single(self, content: tokenizers.Encoding, budget: int) -> list[int]:
        """The content's first `budget` ids with the special tokens of a single text."""
        if self._single_template is not None:
            return self._single_template.build(content.ids[:budget])
        if len(content) > budget:
            content.truncate(budget)
        return self._finish(content, None).ids

    def _prefix(self, text: str, limit: int) -> str:
        """The text up to the last space before `limit` characters, or all of it."""
        if not self._splits_at_spaces or len(text) <= limit:
            return text
        space = text.rfind(" ", 0, limit)
        if space <= 0 or not text[space:].strip():
            return text
        return text[:space].rstrip()

    def encode_pairs(
        self,
        queries: list[str],
        passages: list[str],
        max_length: int,
        query_max_length: int,
        truncate: bool = True,
    ) -> list[Encoded]:
        """Encode (query, passage) pairs with FlagReranker's truncation (see the module docstring)."""
        if query_max_length + self.pair_specials >= max_length:
            raise InputError(
                f"query_max_length {query_max_length} leaves no room for a passage within max_length "
                f"{max_length}; lower query_max_length or raise max_length"
            )
        # A rerank repeats one query for every passage: each distinct query is encoded (and capped)
        # once, its Encoding shared by its pairs, which only read it.
        distinct = list(dict.fromkeys(queries))
        q_by_text, q_full = {}, {}  # the capped encoding, and its length before the cap
        for text, q in zip(distinct, self._content(distinct), strict=True):
            q_full[text] = len(q.ids)
            if len(q.ids) > query_max_length:
                q.truncate(query_max_length)
            q_by_text[text] = q
        p_encs = self._content(passages)
        out = []
        for i, (text, p) in enumerate(zip(queries, p_encs, strict=True)):
            q, q_len = q_by_text[text], q_full[text]
            total = q_len + len(p.ids) + self.pair_specials
            cut = total > max_length or q_len > query_max_length
            if cut and not truncate:
                raise InputTooLongError(
                    f"pair {i} has {total} tokens (query {q_len}), over the limit of {max_length} "
                    f"(query at most {query_max_length}); enable truncation or shorten the texts"
                )
            room = max_length - len(q.ids) - self.pair_specials
            if len(p.ids) > room:
                p.truncate(room)
            item = self._finish(q, p)
            out.append(Encoded(ids=item.ids, type_ids=item.type_ids, truncated=cut))
        return out

    def encode_pair_chunks(
        self, query: str, passages: list[str], max_length: int, query_max_length: int, max_chunks: int
    ) -> list[list[Encoded]]:
        """(query, passage-window) pairs: each passage cut into up to `max_chunks` windows that each fit
        `max_length` beside the query (Cohere's max_chunks_per_doc); the query is capped as in
        `encode_pairs`. A passage with more windows than `max_chunks` is marked truncated."""
        (q,) = self._content([query[: query_max_length * CHARS_PER_TOKEN_CAP]])
        if len(q.ids) > query_max_length:
            q.truncate(query_max_length)
        room = max_length - len(q.ids) - self.pair_specials
        if room < 1:
            raise InputError(f"the query leaves no room for a passage within max_length {max_length}")
        # Only the first room * max_chunks ids are kept: the text past what holds them is never
        # encoded, and the windows past them never made (max_chunks may be any number).
        keep = room * max_chunks
        limit = keep * CHARS_PER_TOKEN_CAP
        out = []
        for text, p in zip(passages, self._content([p[:limit] for p in passages]), strict=True):
            cut = len(text) > limit or len(p.ids) > keep  # marked truncated: windows were dropped
            if len(p.ids) > keep:
                p.truncate(keep)  # at most CHARS_PER_TOKEN_CAP overflowing pieces, dropped next
            windows = [p]
            if len(p.ids) > room:
                p.truncate(room)  # the rest goes to p.overflowing, in windows of `room` ids
                windows = [p, *p.overflowing]
            out.append(
                [
                    Encoded(ids=item.ids, type_ids=item.type_ids, truncated=cut)
                    for item in (self._finish(q, w) for w in windows)
                ]
            )
        return out

    def encoding(
        self, text: str, add_special_tokens: bool = True, max_length: int | None = None
    ) -> tokenizers.Encoding:
        """The encoding of one text (ids, token strings, offsets, special mask), for /tokenize; with
        `max_length`, its content cut so that it fits with the special tokens, as `encode` cuts."""
        if max_length is None:
            return self._tok.encode(text, add_special_tokens=add_special_tokens)
        content = self._tok.encode(text[: max_length * CHARS_PER_TOKEN_CAP], add_special_tokens=False)
        specials = self.single_specials if add_special_tokens and self._post is not None else 0
        if len(content) > max_length - specials:
            content.truncate(max_length - specials)
        if not specials:
            return content
        assert self._post is not None
        done: tokenizers.Encoding = self._post.process(content, None, add_special_tokens=True)
        return done

    def id_to_token(self, token_id: int) -> str:
        return self._tok.id_to_token(token_id) or ""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)
