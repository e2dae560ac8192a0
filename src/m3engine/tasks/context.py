"""What every task needs of the model: the checks that need it, its length limits, tokenization policy.

The options objects (options.py) check what needs no model; `TaskContext` checks the rest, in one
place: which tasks and heads the model's kind has, dimensions against the hidden size, lengths
against the model's limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath

from m3engine.errors import InputError, InvalidInputTypeError, UnsupportedTaskError
from m3engine.models.kinds import ModelKind
from m3engine.models.spec import ModelSpec
from m3engine.settings import EngineSettings
from m3engine.tasks.options import MIN_LENGTH, EmbedOptions
from m3engine.tokenization.tokenizer import CHARS_PER_TOKEN_CAP, TextTokenizer, check_texts
from m3engine.types import Encoded, HeadRequest

# the model kinds that can run each task
TASK_KINDS: dict[str, tuple[ModelKind, ...]] = {
    "embed": (ModelKind.BGE_M3, ModelKind.EMBEDDING),
    "score": (ModelKind.BGE_M3,),
    "rerank": (ModelKind.RERANKER,),
    "score_pairs": (ModelKind.RERANKER,),
    "classify": (ModelKind.CLASSIFIER, ModelKind.RERANKER),
}


class TaskContext:
    """One model's limits and checks, and the tokenization every task shares."""

    def __init__(self, spec: ModelSpec, tokenizer: TextTokenizer, settings: EngineSettings) -> None:
        self.spec, self.tokenizer, self.settings = spec, tokenizer, settings
        self.max_length = self.limit(settings.max_length, spec.default_max_length, "max_length")
        default_query = self.max_length * 3 // 4 if spec.is_cross_encoder else self.max_length
        self.query_max_length = self.limit(settings.query_max_length, default_query, "query_max_length")

    @property
    def short_name(self) -> str:
        """The model's name in messages: its last path component, as a served name may be a path
        on the server, which an answer must not show."""
        return PurePath(self.spec.name).name

    # ---- checks that need the model ---------------------------------------------------------
    def require(self, task: str) -> None:
        kinds = TASK_KINDS[task]
        if self.spec.kind not in kinds:
            wanted = " or ".join(k.value for k in kinds)
            raise UnsupportedTaskError(
                f"{task} needs a {wanted} model; {self.short_name} is a {self.spec.kind.value} model. "
                f"Load a {wanted} model for it (or pass --kind if the kind was detected wrongly)"
            )

    def embed_heads(self, options: EmbedOptions) -> HeadRequest:
        """The heads an embedding asks for, checked against the model's kind and hidden size."""
        self.require("embed")
        if (options.sparse or options.colbert) and self.spec.kind is not ModelKind.BGE_M3:
            raise UnsupportedTaskError(
                f"{self.short_name} is a {self.spec.kind.value} model: it has a dense output only; "
                "ask for dense alone, or load a BGE-M3 checkpoint for sparse and ColBERT"
            )
        dimensions = options.dimensions
        if dimensions is not None and not 1 <= dimensions <= self.spec.hidden_size:
            raise InputError(f"dimensions must be between 1 and {self.spec.hidden_size}; got {dimensions}")
        return HeadRequest(dense=options.dense, sparse=options.sparse, colbert=options.colbert)

    def head_requests(self) -> tuple[HeadRequest, ...]:
        """The distinct head requests this model's tasks make, as the backend's paths tell them
        apart: BGE-M3's dense alone (the CLS rows only) and all three outputs (every row)."""
        if self.spec.is_cross_encoder:
            return (HeadRequest(logits=True),)
        if self.spec.kind is ModelKind.BGE_M3:
            return (HeadRequest(dense=True, sparse=True, colbert=True), HeadRequest(dense=True))
        return (HeadRequest(dense=True),)

    def normalize(self, normalize: bool | None) -> bool:
        """Whether dense vectors come back L2-normalised: as asked, else as the model is used."""
        return self.spec.normalize if normalize is None else normalize

    def limit(self, value: int | None, default: int, name: str) -> int:
        if value is None:
            return default
        if not MIN_LENGTH <= value <= self.spec.max_length:
            raise InputError(
                f"{name} must be between {MIN_LENGTH} and the model's limit {self.spec.max_length}; "
                f"got {value}"
            )
        return value

    def text_limit(self, input_type: str, max_length: int | None) -> int:
        """The token limit of a text: `max_length` given, else the query or the passage one."""
        default = self.query_max_length if input_type == "query" else self.max_length
        return self.limit(max_length, default, "max_length")

    def pair_limits(self, max_length: int | None, query_max: int | None) -> tuple[int, int]:
        """FlagReranker's rule: the query cap given, else the configured one, else 3/4 of the budget."""
        limit = self.limit(max_length, self.max_length, "max_length")
        configured = self.settings.query_max_length
        default = configured if configured is not None else limit * 3 // 4
        return limit, self.limit(query_max, default, "query_max_length")

    # ---- tokenization -----------------------------------------------------------------------
    def encode_texts(
        self,
        texts: list[str],
        input_type: str,
        max_length: int | None,
        truncate: bool,
        instruction: bool = True,
    ) -> list[Encoded]:
        limit = self.text_limit(input_type, max_length)
        if truncate:
            # TEI's pre-tokenizer cap: a text far longer than any token count can use is cut first,
            # so a 4 MB body does not hold a tokenizer thread for what truncation would drop anyway.
            cap = limit * CHARS_PER_TOKEN_CAP
            texts = [t[:cap] for t in texts]
        if input_type == "query" and instruction:
            texts = [self.settings.query_instruction + t for t in texts]
        return self.tokenizer.encode(texts, limit, truncate)

    def encode_pairs(
        self,
        queries: list[str],
        passages: list[str],
        truncate: bool,
        max_length: int | None,
        query_max: int | None,
    ) -> list[Encoded]:
        limit, q_limit = self.pair_limits(max_length, query_max)
        if truncate:  # the character cap of encode_texts, for the same reason
            queries = [q[: q_limit * CHARS_PER_TOKEN_CAP] for q in queries]
            passages = [p[: limit * CHARS_PER_TOKEN_CAP] for p in passages]
        return self.tokenizer.encode_pairs(queries, passages, limit, q_limit, truncate)


def split_pairs(pairs: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
    """(query, passage) pairs as two checked lists of texts."""
    if isinstance(pairs, str) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise InputError("pairs must be a non-empty list of (query, passage) pairs")
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidInputTypeError(f"pair {i} is not a (query, passage) pair of two strings")
    queries = check_texts([p[0] for p in pairs], "query")
    passages = check_texts([p[1] for p in pairs], "passage")
    return queries, passages
