"""The model: prompt tokenizer, T5 backbone presets, soft prompts, and the PeaPOD wrapper."""

from .backbone import PRESETS, build_backbone, embedding_rows
from .peapod import PeaPOD, lookup_rows, sequence_loss
from .prompts import ComponentUserPrompt, NeighborUserPrompt, TaskPrompt, UserTable
from .tokenization import EOS_ID, ID_MENTION, PAD_ID, UNK_ID, PromptTokenizer

__all__ = [
    "EOS_ID",
    "ID_MENTION",
    "PAD_ID",
    "PRESETS",
    "UNK_ID",
    "ComponentUserPrompt",
    "NeighborUserPrompt",
    "PeaPOD",
    "PromptTokenizer",
    "TaskPrompt",
    "UserTable",
    "build_backbone",
    "embedding_rows",
    "lookup_rows",
    "sequence_loss",
]
