"""Load a BERT / XLM-R checkpoint's tensors into the fused layout the packed encoder runs on.

One QKV matrix per layer (3H, H) instead of three, so attention's projections are one matrix
product; an optional classification head (XLM-R's dense+tanh+out_proj, or BERT's pooler+classifier:
the same arithmetic on the CLS state) for rerankers and classifiers. Reads `model.safetensors` or,
failing that, `pytorch_model.bin`; the key prefixes `roberta.` / `bert.` of the *ForSequenceClassification
layouts are stripped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from m3engine.errors import UnknownModelKindError
from m3engine.models.kinds import read_json

_PREFIXES = ("roberta.", "bert.", "model.")
# XLM-R / RoBERTa number positions from padding_idx + 1; BERT from 0.
_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"}
ACTIVATIONS = {"gelu", "gelu_new", "gelu_pytorch_tanh", "relu"}


@dataclass(frozen=True)
class EncoderConfig:
    hidden: int
    heads: int
    layers: int
    eps: float
    activation: str  # one of ACTIVATIONS
    position_offset: int  # added to each token's index within its sequence

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass
class LayerWeights:
    qkv_w: torch.Tensor  # (3H, H): query, key, value rows stacked
    qkv_b: torch.Tensor  # (3H,)
    attn_out_w: torch.Tensor  # (H, H)
    attn_out_b: torch.Tensor  # (H,)
    ln1_w: torch.Tensor  # (H,) LayerNorm after attention + residual
    ln1_b: torch.Tensor
    ffn_in_w: torch.Tensor  # (F, H)
    ffn_in_b: torch.Tensor  # (F,)
    ffn_out_w: torch.Tensor  # (H, F)
    ffn_out_b: torch.Tensor  # (H,)
    ln2_w: torch.Tensor  # (H,) LayerNorm after the FFN + residual
    ln2_b: torch.Tensor


@dataclass
class ClassifierWeights:
    """tanh(dense(h_cls)) then out_proj: XLM-R's classification head and BERT's pooler+classifier."""

    dense_w: torch.Tensor  # (H, H)
    dense_b: torch.Tensor  # (H,)
    out_w: torch.Tensor  # (C, H)
    out_b: torch.Tensor  # (C,)


@dataclass
class EncoderWeights:
    config: EncoderConfig
    word: torch.Tensor  # (V, H)
    position: torch.Tensor  # (P, H)
    token_type: torch.Tensor  # (types, H)
    emb_ln_w: torch.Tensor  # (H,)
    emb_ln_b: torch.Tensor  # (H,)
    layers: list[LayerWeights]
    classifier: ClassifierWeights | None


def read_config(path: Path) -> EncoderConfig:
    config = read_json(path / "config.json")
    model_type = str(config.get("model_type", ""))
    activation = str(config.get("hidden_act", "gelu"))
    if activation not in ACTIVATIONS:
        raise UnknownModelKindError(f"{path}: hidden_act {activation!r} is not supported by the fast backend")
    offset = int(config.get("pad_token_id", 1)) + 1 if model_type in _OFFSET_TYPES else 0
    return EncoderConfig(
        hidden=int(config["hidden_size"]),
        heads=int(config["num_attention_heads"]),
        layers=int(config["num_hidden_layers"]),
        eps=float(config.get("layer_norm_eps", 1e-12)),
        activation=activation,
        position_offset=offset,
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors on the CPU, key prefixes stripped."""
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        raw = load_file(str(path / "model.safetensors"), device="cpu")
    elif (path / "pytorch_model.bin").is_file():
        raw = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise UnknownModelKindError(f"{path}: no model.safetensors or pytorch_model.bin")
    state = {}
    for key, value in raw.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        state[key.replace(".gamma", ".weight").replace(".beta", ".bias")] = value
    return state


def _classifier(state: dict[str, torch.Tensor]) -> ClassifierWeights | None:
    if "classifier.out_proj.weight" in state:  # XLM-R / RoBERTa
        return ClassifierWeights(
            state["classifier.dense.weight"],
            state["classifier.dense.bias"],
            state["classifier.out_proj.weight"],
            state["classifier.out_proj.bias"],
        )
    if "classifier.weight" in state and "pooler.dense.weight" in state:  # BERT
        return ClassifierWeights(
            state["pooler.dense.weight"],
            state["pooler.dense.bias"],
            state["classifier.weight"],
            state["classifier.bias"],
        )
    return None


def _layer(state: dict[str, torch.Tensor], i: int) -> LayerWeights:
    p = f"encoder.layer.{i}."
    a = p + "attention."
    return LayerWeights(
        qkv_w=torch.cat([state[f"{a}self.{n}.weight"] for n in ("query", "key", "value")]),
        qkv_b=torch.cat([state[f"{a}self.{n}.bias"] for n in ("query", "key", "value")]),
        attn_out_w=state[a + "output.dense.weight"],
        attn_out_b=state[a + "output.dense.bias"],
        ln1_w=state[a + "output.LayerNorm.weight"],
        ln1_b=state[a + "output.LayerNorm.bias"],
        ffn_in_w=state[p + "intermediate.dense.weight"],
        ffn_in_b=state[p + "intermediate.dense.bias"],
        ffn_out_w=state[p + "output.dense.weight"],
        ffn_out_b=state[p + "output.dense.bias"],
        ln2_w=state[p + "output.LayerNorm.weight"],
        ln2_b=state[p + "output.LayerNorm.bias"],
    )


def _move(t: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return t.to(device=device, dtype=dtype).contiguous()


def load_encoder(path: Path, device: torch.device, dtype: torch.dtype) -> EncoderWeights:
    """Every tensor in `dtype` on `device`, ready for the packed forward."""
    config = read_config(path)
    state = read_state_dict(path)
    try:
        layers = [_layer(state, i) for i in range(config.layers)]
        types = state.get("embeddings.token_type_embeddings.weight")
        if types is None:  # models without segments: one zero row keeps the arithmetic uniform
            types = torch.zeros(1, config.hidden)
        weights = EncoderWeights(
            config=config,
            word=state["embeddings.word_embeddings.weight"],
            position=state["embeddings.position_embeddings.weight"],
            token_type=types,
            emb_ln_w=state["embeddings.LayerNorm.weight"],
            emb_ln_b=state["embeddings.LayerNorm.bias"],
            layers=layers,
            classifier=_classifier(state),
        )
    except KeyError as error:
        raise UnknownModelKindError(f"{path}: checkpoint lacks tensor {error.args[0]!r}") from error
    return _to(weights, device, dtype)


def _to(w: EncoderWeights, device: torch.device, dtype: torch.dtype) -> EncoderWeights:
    def mv(t: torch.Tensor) -> torch.Tensor:
        return _move(t, device, dtype)

    layers = [LayerWeights(**{k: mv(v) for k, v in vars(layer).items()}) for layer in w.layers]
    classifier = None
    if w.classifier is not None:
        classifier = ClassifierWeights(**{k: mv(v) for k, v in vars(w.classifier).items()})
    return EncoderWeights(
        config=w.config,
        word=mv(w.word),
        position=mv(w.position),
        token_type=mv(w.token_type),
        emb_ln_w=mv(w.emb_ln_w),
        emb_ln_b=mv(w.emb_ln_b),
        layers=layers,
        classifier=classifier,
    )
