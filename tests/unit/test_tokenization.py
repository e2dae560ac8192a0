from __future__ import annotations

import pytest

from m3engine import Engine, InputTooLongError
from m3engine.tokenization.tokenizer import check_texts
from tests.texts import LONG


def test_truncation_cuts_content_and_keeps_special_tokens(bge_m3: Engine) -> None:
    full = bge_m3.tokenizer.encode([LONG], 10_000)[0]
    cut = bge_m3.tokenizer.encode([LONG], 64)[0]
    assert len(full) > 64 and not full.truncated
    assert len(cut) == 64 and cut.truncated
    assert cut.ids[0] == 0 and cut.ids[-1] == 2  # <s> ... </s>
    assert cut.ids[:-1] == full.ids[:63]


def test_truncation_off_refuses_without_echoing_the_text(bge_m3: Engine) -> None:
    with pytest.raises(InputTooLongError) as info:
        bge_m3.tokenizer.encode(["short", LONG], 64, truncate=False)
    message = str(info.value)
    assert "input 1" in message and "64" in message and "truncat" in message
    assert LONG[:30] not in message


def test_pair_layout_is_the_tokenizers_own(reranker: Engine) -> None:
    (pair,) = reranker.tokenizer.encode_pairs(["what"], ["that"], 128, 96)
    q = reranker.tokenizer.encode(["what"], 128)[0].ids[1:-1]
    p = reranker.tokenizer.encode(["that"], 128)[0].ids[1:-1]
    assert pair.ids == [0, *q, 2, 2, *p, 2]  # XLM-R: <s> q </s></s> p </s>


def test_check_texts_accepts_one_string_as_one_input() -> None:
    assert check_texts("hello") == ["hello"]
    assert check_texts(("a", "b")) == ["a", "b"]


@pytest.mark.parametrize(
    ("chars_per_token", "piece_chars", "min_piece_chars"),
    [(6, 4096, 4096), (1, 4096, 4096), (6, 5, 5), (1, 40, 40), (6, 4096, 16)],
)
@pytest.mark.parametrize("limit", [8, 17, 64, 128])
def test_long_texts_match_the_hf_tokenizer_exactly(
    bge_m3: Engine,
    minilm_dir: object,
    limit: int,
    chars_per_token: int,
    piece_chars: int,
    min_piece_chars: int,
) -> None:
    """Long texts take the prefix path (cut at a space, then encoded in pieces); the ids must not
    change. One character per token makes every first prefix too short: the retry and whole-text
    paths; small pieces cut every text into many; a small `min_piece_chars` with 64 cores cuts one
    text at a time (each is encoded alone) into pieces of its share per core."""
    from transformers import AutoTokenizer

    from m3engine.tokenization.tokenizer import TextTokenizer
    from tests.texts import MULTILINGUAL

    texts = [
        LONG,
        "  ".join(MULTILINGUAL) * 3,  # double spaces, many scripts
        "深度学习是机器学习的一个分支" * 40,  # no spaces: the whole text is encoded
        "word " * 400 + "深度学习" * 50,
        "x" * 3000 + " tail",  # one giant word, then a space
        LONG[: limit * 5 + 3],
        "line one\nline two \t tab  e\u0301t\u00e9 \u0301x \n y " * 60,  # other spaces, combining marks
    ]
    for path in (bge_m3.spec.path, minilm_dir):
        ours = TextTokenizer.load(path)  # type: ignore[arg-type]
        ours.chars_per_token, ours.piece_chars = chars_per_token, piece_chars
        ours.min_piece_chars, ours.cores = min_piece_chars, 64
        hf = AutoTokenizer.from_pretrained(str(path))
        for text in texts:
            expected = hf(text, truncation=True, max_length=limit)["input_ids"]
            (got,) = ours.encode([text], limit)
            assert got.ids == expected, (path, text[:20], limit)
            assert got.truncated == (len(hf(text)["input_ids"]) > limit)


def test_few_texts_are_cut_finer_than_many(bge_m3: Engine) -> None:
    """Fewer texts than cores: pieces of their characters per core, at least min_piece_chars; as many
    texts as cores (a bulk piece): the usual piece_chars. One text that fits its max_length whole
    is cut too (the pieces reach the Rust pool), and its ids and truncation flag do not change."""
    from m3engine.tokenization.tokenizer import MIN_PIECE_CHARS, PIECE_CHARS, TextTokenizer
    from tests.texts import MULTILINGUAL

    tok = TextTokenizer.load(bge_m3.spec.path)
    tok.cores = 16
    assert tok.piece_size(["x" * 3052]) == MIN_PIECE_CHARS  # 190 per core: no smaller than the floor
    assert tok.piece_size(["x" * 40_000]) == 2500  # one long document over 16 cores
    assert tok.piece_size(["x" * 40_000, "y" * 40_000]) == PIECE_CHARS  # 5,000 per core: capped
    assert tok.piece_size(["x" * 40_000] * 16) == PIECE_CHARS
    text = " ".join(MULTILINGUAL * 8)  # varied words and scripts, ~4,000 characters
    assert 16 * MIN_PIECE_CHARS < len(text) < 8192  # cut into pieces of its 1/16, >= CUT_INTO of them
    seen: list[int] = []
    content = tok._content
    tok._content = lambda texts: seen.append(len(texts)) or content(texts)  # type: ignore[method-assign]
    (pieces,) = tok.encode([text], 8192)
    assert seen and seen[-1] >= 4, seen  # cut, though it fits max_length whole
    tok.cores, seen[:] = 1, []
    (whole,) = tok.encode([text], 8192)
    assert seen == []  # one core: the short path, encoded whole with its special tokens
    assert pieces.ids == whole.ids and not pieces.truncated and not whole.truncated


def test_no_cut_beside_a_character_the_normalizer_turns_into_a_space() -> None:
    """A normalizer that maps U+200B to a space and collapses runs of spaces (as XLM-R's nmt_nfkc
    does): a cut after "alpha\u200b" would end a piece in a space, an extra "▁" token. Cuts only
    between letters or digits that normalize to no space keep the ids of the whole text."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from m3engine.tokenization.source import parts_of
    from m3engine.tokenization.tokenizer import TextTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "▁": 4, "▁alpha": 5, "▁beta": 6, "▁gamma.": 7}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.normalizer = normalizers.Sequence(
        [normalizers.Replace("\u200b", " "), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>",
    )  # fmt: skip
    tok = TextTokenizer(parts_of(hf))
    tok.cores, tok.min_piece_chars = 64, 16
    text = ("alpha\u200b beta gamma. alpha " * 200).strip()
    expected = raw.encode(text).ids
    assert 4 not in expected  # the whole text has no lone "▁"
    (got,) = tok.encode([text], 10_000)
    assert got.ids == expected
    tok._normalizer = None  # the letters-or-digits rule alone also refuses these cuts
    assert tok.encode([text], 10_000)[0].ids == expected


def test_pair_template_builds_what_the_post_processor_builds(bge_m3: Engine, minilm_dir: object) -> None:
    """XLM-R (<s> A </s></s> B </s>, types 0) and BERT ([CLS] A [SEP] B [SEP], types 0 then 1)."""
    import random

    from m3engine.tokenization.pair_template import read_pair_template
    from m3engine.tokenization.tokenizer import TextTokenizer
    from tests.texts import MULTILINGUAL

    rng = random.Random(0)
    for path in (bge_m3.spec.path, minilm_dir):
        tok = TextTokenizer.load(path)  # type: ignore[arg-type]
        template = read_pair_template(tok._tok)
        assert template is not None
        for _ in range(30):
            a = tok._tok.encode(rng.choice(MULTILINGUAL), add_special_tokens=False)
            b = tok._tok.encode(rng.choice([*MULTILINGUAL, LONG]), add_special_tokens=False)
            expected = tok._post.process(a, b, add_special_tokens=True)
            built = template.build(list(a.ids), list(b.ids))
            assert built.ids == list(expected.ids) and built.type_ids == list(expected.type_ids)
        if path != bge_m3.spec.path:
            assert set(template.suffix_types) == {1} and template.second_type == 1  # BERT segments


def test_single_template_builds_what_the_post_processor_builds(bge_m3: Engine, minilm_dir: object) -> None:
    """XLM-R (<s> A </s>) and BERT ([CLS] A [SEP])."""
    from m3engine.tokenization.pair_template import read_single_template
    from m3engine.tokenization.tokenizer import TextTokenizer
    from tests.texts import MULTILINGUAL

    for path in (bge_m3.spec.path, minilm_dir):
        tok = TextTokenizer.load(path)  # type: ignore[arg-type]
        template = read_single_template(tok._tok)
        assert template is not None and template.prefix and template.suffix
        for text in [*MULTILINGUAL, LONG]:
            a = tok._tok.encode(text, add_special_tokens=False)
            expected = tok._post.process(a, None, add_special_tokens=True)
            assert template.build(list(a.ids)) == list(expected.ids)


def test_a_repeated_query_is_encoded_once_and_gives_what_each_pair_alone_gives(reranker: Engine) -> None:
    tok = reranker.tokenizer
    queries = [LONG[:300], "short", LONG[:300], LONG[:300]]  # LONG[:300] is over the query cap of 20
    passages = [LONG[:200], "a", LONG[:50], "b"]
    together = tok.encode_pairs(queries, passages, 64, 20)
    for i, (q, p) in enumerate(zip(queries, passages, strict=True)):
        (alone,) = tok.encode_pairs([q], [p], 64, 20)
        assert together[i] == alone, i
    assert [e.truncated for e in together] == [True, False, True, True]
    with pytest.raises(InputTooLongError, match=r"^pair 0 has"):
        tok.encode_pairs(queries, passages, 64, 20, truncate=False)


def test_usable_cores_follows_the_rust_pool_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """TOKENIZERS_PARALLELISM off (as the Rust side reads it) means one core; RAYON_NUM_THREADS caps
    the count; neither set: the process's CPUs (its affinity within its cgroup quota)."""
    from m3engine.process.cpu_quota import available_cpus
    from m3engine.tokenization.tokenizer import usable_cores

    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    cpus = available_cpus()
    assert usable_cores() == cpus
    for off in ("false", "0", "", "n", "OFF"):
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", off)
        assert usable_cores() == 1, off
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    assert usable_cores() == cpus
    monkeypatch.setenv("RAYON_NUM_THREADS", "1")
    assert usable_cores() == 1
