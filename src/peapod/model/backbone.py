"""The T5 backbone: named shape presets with random init, or pretrained weights from a name or folder.

Presets (random init; T5 v1 conventions: ReLU feed-forward, tied input/output embeddings, relative position
buckets 32/128):

========== ======= ============= ======= ====== ======
preset     d_model layers (enc+dec) heads  d_ff   d_kv
========== ======= ============= ======= ====== ======
t5-small   512     6 + 6         8       2048   64     (the paper's shape: 60.5 M params at vocab 32,128)
small      256     4 + 4         4       1024   64
tiny       64      2 + 2         2       256    32
========== ======= ============= ======= ====== ======

The embedding table has one row per tokenizer id, except for the official T5 vocabulary (32,100 ids),
which keeps the checkpoint's 32,128 rows so that pretrained weights load unchanged.
"""

from __future__ import annotations

from pathlib import Path

from transformers import T5Config, T5ForConditionalGeneration

from ..errors import ConfigError, PeapodError
from .tokenization import EOS_ID, PAD_ID, _first_line, hub_reachable

T5_VOCAB = 32100  # ids of the official T5 sentencepiece vocabulary
T5_EMBEDDING_ROWS = 32128  # rows of the official checkpoints' embedding matrix

PRESETS: dict[str, dict[str, int]] = {
    "t5-small": {"d_model": 512, "num_layers": 6, "num_decoder_layers": 6, "num_heads": 8, "d_ff": 2048, "d_kv": 64},
    "small": {"d_model": 256, "num_layers": 4, "num_decoder_layers": 4, "num_heads": 4, "d_ff": 1024, "d_kv": 64},
    "tiny": {"d_model": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 2, "d_ff": 256, "d_kv": 32},
}


def embedding_rows(vocab_size: int) -> int:
    """Rows of the embedding table for a tokenizer of ``vocab_size`` ids (32,100 -> 32,128, else unchanged)."""
    return T5_EMBEDDING_ROWS if vocab_size == T5_VOCAB else vocab_size


def preset_config(name: str, vocab_size: int, dropout: float = 0.1) -> T5Config:
    """The :class:`T5Config` of a preset for a tokenizer of ``vocab_size`` ids."""
    if name not in PRESETS:
        raise ConfigError(f"unknown backbone preset {name!r}; presets: {', '.join(PRESETS)}")
    return T5Config(
        vocab_size=embedding_rows(vocab_size),
        dropout_rate=dropout,
        feed_forward_proj="relu",
        decoder_start_token_id=PAD_ID,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        **PRESETS[name],
    )


def build_backbone(
    spec: str, vocab_size: int, pretrained: bool = False, dropout: float = 0.1
) -> T5ForConditionalGeneration:
    """Build the encoder-decoder for a tokenizer of ``vocab_size`` ids.

    ``spec`` is a preset name (``t5-small``, ``small``, ``tiny``), a local folder holding a Hugging Face T5
    checkpoint (``config.json`` + weights) or a Hugging Face model name. With ``pretrained=False`` the
    weights are randomly initialised (from the preset's shape, or from the folder's / name's config); with
    ``pretrained=True`` they are loaded and the embedding table is grown when the tokenizer has more ids.
    """
    if vocab_size < 3:
        raise ConfigError(f"vocab_size must be >= 3 (pad, eos, unk), got {vocab_size}")
    if not pretrained:
        if spec in PRESETS:
            config = preset_config(spec, vocab_size, dropout)
        else:
            config = _load_config(spec)
            config.vocab_size = embedding_rows(vocab_size)
            config.dropout_rate = dropout
            _set_special_ids(config)
        return T5ForConditionalGeneration(config)
    if spec in PRESETS and spec != "t5-small" and not Path(spec).is_dir():
        raise ConfigError(
            f"backbone preset {spec!r} has no pretrained weights; set model.pretrained=false, "
            "or name a checkpoint (a local folder or a Hugging Face name such as t5-small)"
        )
    try:
        try:
            model = T5ForConditionalGeneration.from_pretrained(spec, dropout_rate=dropout, local_files_only=True)
        except Exception:
            if Path(spec).is_dir() or not hub_reachable():
                raise
            model = T5ForConditionalGeneration.from_pretrained(spec, dropout_rate=dropout)
    except Exception as exc:
        raise PeapodError(
            f"could not load pretrained backbone {spec!r} ({type(exc).__name__}: {_first_line(exc)}); "
            "offline, pass a local folder holding config.json and model.safetensors"
        ) from None
    _set_special_ids(model.config)
    model.generation_config.decoder_start_token_id = PAD_ID
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    rows = model.get_input_embeddings().num_embeddings
    if rows < vocab_size:
        model.resize_token_embeddings(vocab_size)
    return model


def _load_config(spec: str) -> T5Config:
    try:
        try:
            return T5Config.from_pretrained(spec, local_files_only=True)
        except Exception:
            if Path(spec).is_dir() or not hub_reachable():
                raise
            return T5Config.from_pretrained(spec)
    except Exception as exc:
        raise ConfigError(
            f"unknown backbone {spec!r}: not a preset ({', '.join(PRESETS)}) and no T5 config could be read "
            f"from it ({type(exc).__name__})"
        ) from None


def _set_special_ids(config: T5Config) -> None:
    config.decoder_start_token_id = PAD_ID
    config.pad_token_id = PAD_ID
    config.eos_token_id = EOS_ID
