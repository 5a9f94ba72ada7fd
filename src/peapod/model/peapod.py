"""PeaPOD: a T5 encoder-decoder with whole-word embeddings, a task prompt and a user-personalized prompt.

Encoder input: ``[task prompt (3) ; user prompt (L) ; shared(input_ids) + whole_word(whole_word_ids)]``
(the public code's order); the prompts get no whole-word term. The attention mask is extended with ones over
the prefix and given to the encoder AND to the decoder's cross-attention (fix of reference bug 10.6: the
reference masked the encoder only, so outputs depended on batch padding). Labels use -100 for padding
(fix of bug 10.7), and the loss is the paper's eq. 4: each sample's mean token NLL, averaged over samples.

Variants (``ModelConfig``): ``user_prompt`` = components (paper text) | neighbors (public code) | none
(POD: task prompt only); ``task_prompt=False`` is the paper's PeaPOD-X ablation.

A saved model is a folder: ``model.safetensors`` (the state dict; tied T5 weights stored once),
``config.json`` (ModelConfig, the T5Config, user-table and neighbour-index shapes) and, when known,
``user_ids.json`` (the user id of each embedding row). Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from ..config import TASKS, ModelConfig, PeapodConfig
from ..errors import ConfigError, PeapodError, UnknownIdError
from ..io import atomic_path, atomic_write_json
from .prompts import ComponentUserPrompt, NeighborUserPrompt, TaskPrompt

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
USER_IDS_FILE = "user_ids.json"
FORMAT = "peapod-model"
FORMAT_VERSION = 1

#: Whole-word embedding init: rows >= 1 ~ N(0, (ratio * token RMS)^2), row 0 (non-id tokens) zero.
WHOLE_WORD_INIT_RATIO = 0.5


def _skip_init() -> contextlib.AbstractContextManager:
    """Skip the backbone's random init when its weights are about to be loaded (plain init if unavailable)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older/newer transformers
        return contextlib.nullcontext()
    return no_init_weights()


def lookup_rows(index: Mapping[str, int], ids: Sequence[str], kind: str = "user") -> torch.Tensor:
    """Map id strings to embedding rows (LongTensor); unknown ids raise :class:`UnknownIdError`."""
    try:
        return torch.tensor([index[i] for i in ids], dtype=torch.long)
    except KeyError:
        unknown = [i for i in ids if i not in index]
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise UnknownIdError(
            f"{len(unknown)} {kind} id(s) have no {kind} embedding: {shown}; the model knows {len(index)} "
            f"{kind}s (fold new {kind}s into the embeddings first)"
        ) from None


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "sample") -> torch.Tensor:
    """Token NLL of ``labels`` (B, T; -100 ignored) under ``logits`` (B, T, V).

    ``reduction``: ``sample`` (eq. 4: mean over each sample's tokens, then over samples having tokens),
    ``token`` (mean over all tokens), ``none`` (the (B,) per-sample means).
    """
    token_nll = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(labels.shape)
    counts = (labels != -100).sum(dim=1)
    if reduction == "token":
        return token_nll.sum() / counts.sum().clamp_min(1)
    per_sample = token_nll.sum(dim=1) / counts.clamp_min(1)
    if reduction == "none":
        return per_sample
    if reduction != "sample":
        raise ValueError(f"reduction must be sample, token or none, got {reduction!r}")
    has_tokens = counts > 0
    return per_sample[has_tokens].sum() / has_tokens.sum().clamp_min(1)


class PeaPOD(nn.Module):
    """The T5 backbone with the task and user soft prompts and the whole-word embedding."""

    def __init__(
        self,
        config: ModelConfig,
        backbone: T5ForConditionalGeneration,
        user_embeddings: torch.Tensor | None = None,
        neighbor_index: torch.Tensor | None = None,
        user_ids: Sequence[str] | None = None,
    ):
        super().__init__()
        self.config = config
        self.backbone = backbone
        d_model = backbone.config.d_model
        token_rms = backbone.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt().item()
        if not math.isfinite(token_rms) or token_rms <= 0:  # uninitialised storage before a load
            token_rms = 1.0

        self.whole_word_embeddings = nn.Embedding(config.max_whole_words, d_model)
        with torch.no_grad():
            self.whole_word_embeddings.weight.normal_(0.0, WHOLE_WORD_INIT_RATIO * token_rms)
            self.whole_word_embeddings.weight[0].zero_()

        self.task_prompt = (
            TaskPrompt(len(TASKS), config.task_prompt_length, d_model) if config.task_prompt else None
        )
        self.user_prompt: ComponentUserPrompt | NeighborUserPrompt | None = None
        if config.user_prompt == "components":
            if user_embeddings is None:
                raise ConfigError("model.user_prompt=components needs user embeddings")
            self.user_prompt = ComponentUserPrompt(
                n_users=user_embeddings.shape[0],
                user_dim=user_embeddings.shape[1],
                d_model=d_model,
                n_components=config.n_components,
                length=config.user_prompt_length,
                user_embeddings=user_embeddings,
                train_user_embeddings=config.train_user_embeddings,
                target_rms=token_rms,
            )
        elif config.user_prompt == "neighbors":
            if user_embeddings is None or neighbor_index is None:
                raise ConfigError("model.user_prompt=neighbors needs user embeddings and a neighbour index")
            self.user_prompt = NeighborUserPrompt(
                user_embeddings,
                neighbor_index,
                d_model=d_model,
                length=config.user_prompt_length,
                n_heads=config.n_heads,
                train_user_embeddings=config.train_user_embeddings,
            )
        elif config.user_prompt != "none":
            raise ConfigError(f"unknown model.user_prompt {config.user_prompt!r}")

        self.user_ids: list[str] | None = None
        self.user_index: dict[str, int] | None = None
        if user_ids is not None:
            self.set_user_ids(user_ids)

    # ------------------------------------------------------------------ properties
    @property
    def d_model(self) -> int:
        return self.backbone.config.d_model

    @property
    def prefix_length(self) -> int:
        """Number of soft-prompt vectors before the text (task + user)."""
        task = self.task_prompt.length if self.task_prompt is not None else 0
        user = self.user_prompt.length if self.user_prompt is not None else 0
        return task + user

    @property
    def n_users(self) -> int:
        return self.user_prompt.users.n_users if self.user_prompt is not None else 0

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of (distinct) parameters, optionally only those that require gradients."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ users
    def set_user_ids(self, user_ids: Sequence[str]) -> None:
        """Record the user id of each embedding row (for :meth:`user_rows`)."""
        user_ids = [str(u) for u in user_ids]
        if self.user_prompt is not None and len(user_ids) != self.n_users:
            raise ConfigError(f"{len(user_ids)} user ids given for {self.n_users} user-embedding rows")
        if len(set(user_ids)) != len(user_ids):
            raise ConfigError("user ids are not unique")
        self.user_ids = user_ids
        self.user_index = {u: i for i, u in enumerate(user_ids)}

    def user_rows(self, user_ids: Sequence[str]) -> torch.Tensor:
        """Embedding rows (B,) of user id strings; unknown users raise :class:`UnknownIdError`."""
        if self.user_index is None:
            raise PeapodError("this model has no user id index (pass user_ids when building it)")
        return lookup_rows(self.user_index, user_ids, "user")

    # ------------------------------------------------------------------ encoder
    def _prefix(
        self, task_ids: torch.Tensor | None, user_rows: torch.Tensor | None, user_prompts: torch.Tensor | None
    ) -> list[torch.Tensor]:
        parts = []
        if self.task_prompt is not None:
            if task_ids is None:
                raise PeapodError("task_ids are required: the model has a task prompt")
            parts.append(self.task_prompt(task_ids))
        if self.user_prompt is not None:
            if user_prompts is not None:
                expected = (self.user_prompt.length, self.d_model)
                if tuple(user_prompts.shape[1:]) != expected:
                    raise PeapodError(f"user_prompts must be (B, {expected[0]}, {expected[1]}), got {tuple(user_prompts.shape)}")
                parts.append(user_prompts)
            elif user_rows is None:
                raise PeapodError("user_rows are required: the model has a user prompt")
            else:
                parts.append(self.user_prompt(user_rows))
        return parts

    def extend_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """The text mask (B, T) with ones over the prompt prefix prepended: (B, prefix + T)."""
        ones = attention_mask.new_ones(attention_mask.shape[0], self.prefix_length)
        return torch.cat([ones, attention_mask], dim=1)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        whole_word_ids: torch.Tensor,
        task_ids: torch.Tensor | None = None,
        user_rows: torch.Tensor | None = None,
        user_prompts: torch.Tensor | None = None,
    ) -> tuple[BaseModelOutput, torch.Tensor]:
        """Run the encoder once on [prompts ; text]: (encoder outputs, extended attention mask).

        ``user_prompts`` (B, L, d), when given, replaces the user prompt of ``user_rows`` (cold start:
        ``user_prompt.prompts_for_queries`` / ``prompts_from_embeddings`` on folded-in embeddings).
        """
        embeds = self.backbone.get_input_embeddings()(input_ids) + self.whole_word_embeddings(whole_word_ids)
        parts = [p.to(embeds.dtype) for p in self._prefix(task_ids, user_rows, user_prompts)]
        inputs = torch.cat([*parts, embeds], dim=1) if parts else embeds
        mask = self.extend_mask(attention_mask)
        encoder_outputs = self.backbone.get_encoder()(inputs_embeds=inputs, attention_mask=mask, return_dict=True)
        return encoder_outputs, mask

    # ------------------------------------------------------------------ forward / generate
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        whole_word_ids: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
        user_rows: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | None = None,
        extended_attention_mask: torch.Tensor | None = None,
    ) -> Seq2SeqLMOutput:
        """Teacher-forced decoder logits and, with ``labels`` (pad = -100), the eq. 4 loss.

        Pass ``encoder_outputs`` with ``extended_attention_mask`` (from :meth:`encode`) to reuse an encoding.
        """
        if encoder_outputs is None:
            if input_ids is None or attention_mask is None or whole_word_ids is None:
                raise PeapodError("forward needs input_ids, attention_mask and whole_word_ids (or encoder_outputs)")
            encoder_outputs, extended_attention_mask = self.encode(
                input_ids, attention_mask, whole_word_ids, task_ids, user_rows
            )
        elif extended_attention_mask is None:
            if attention_mask is None:
                raise PeapodError("encoder_outputs need extended_attention_mask (or the text attention_mask)")
            extended_attention_mask = self.extend_mask(attention_mask)
        if decoder_input_ids is None:
            if labels is None:
                raise PeapodError("forward needs labels or decoder_input_ids")
            decoder_input_ids = self.backbone.prepare_decoder_input_ids_from_labels(labels)
        out = self.backbone(
            encoder_outputs=encoder_outputs,
            attention_mask=extended_attention_mask,
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
            return_dict=True,
        )
        loss = sequence_loss(out.logits, labels) if labels is not None else None
        return Seq2SeqLMOutput(
            loss=loss,
            logits=out.logits,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        whole_word_ids: torch.Tensor,
        task_ids: torch.Tensor | None = None,
        user_rows: torch.Tensor | None = None,
        user_prompts: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> Any:
        """Encode once and decode with ``backbone.generate`` (beams, ``prefix_allowed_tokens_fn``, ...).

        Returns the generated ids (B * num_return_sequences, T), starting with the decoder start (0);
        finished beams are padded with EOS (1): cut at the first EOS (``PromptTokenizer.decode`` does).
        With ``return_dict_in_generate=True`` the whole generate output (``sequences_scores``, ...) is returned.
        """
        encoder_outputs, mask = self.encode(
            input_ids, attention_mask, whole_word_ids, task_ids, user_rows, user_prompts
        )
        out = self.backbone.generate(encoder_outputs=encoder_outputs, attention_mask=mask, **generate_kwargs)
        if generate_kwargs.get("return_dict_in_generate"):
            return out
        return out.sequences if hasattr(out, "sequences") else out

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> None:
        """Write ``model.safetensors``, ``config.json`` (and ``user_ids.json``) into ``folder`` atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_model(self, str(tmp), metadata={"format": "pt", "peapod": FORMAT})
        user_table = self.user_prompt.users if self.user_prompt is not None else None
        description = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": dataclasses.asdict(self.config),
            "backbone": self.backbone.config.to_dict(),
            "n_users": user_table.n_users if user_table is not None else 0,
            "user_dim": user_table.dim if user_table is not None else 0,
            "n_neighbors": self.user_prompt.n_neighbors if isinstance(self.user_prompt, NeighborUserPrompt) else 0,
        }
        atomic_write_json(folder / CONFIG_FILE, description)
        if self.user_ids is not None:
            atomic_write_json(folder / USER_IDS_FILE, self.user_ids, indent=None)

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> "PeaPOD":
        """Rebuild a model written by :meth:`save` (no pickle: config + safetensors)."""
        folder = Path(folder)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise PeapodError(f"{config_path}: not found (is {folder} a saved peapod model?)")
        try:
            raw = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PeapodError(f"{config_path}: not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise PeapodError(f"{config_path}: not a peapod model description (format {FORMAT!r} expected)")
        model_config = PeapodConfig.from_dict({"model": raw["model"]}, source=str(config_path)).model
        backbone_raw = dict(raw["backbone"])
        backbone_raw.pop("transformers_version", None)
        with _skip_init():  # every weight is overwritten by the checkpoint
            backbone = T5ForConditionalGeneration(T5Config.from_dict(backbone_raw))
        backbone.tie_weights()  # skipped init also skips tying shared / embed_tokens / lm_head
        n_users, user_dim, n_neighbors = int(raw["n_users"]), int(raw["user_dim"]), int(raw["n_neighbors"])
        user_embeddings = torch.zeros(n_users, user_dim) if n_users else None
        neighbor_index = torch.zeros(n_users, n_neighbors, dtype=torch.long) if n_neighbors else None
        user_ids = None
        if (folder / USER_IDS_FILE).is_file():
            user_ids = json.loads((folder / USER_IDS_FILE).read_text(encoding="utf-8"))
        model = cls(model_config, backbone, user_embeddings, neighbor_index, user_ids=user_ids)
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise PeapodError(f"{weights}: not found")
        try:
            load_model(model, str(weights), strict=True)
        except RuntimeError as exc:
            raise PeapodError(f"{weights}: does not match {config_path}: {exc}") from None
        return model.to(map_location).eval()
