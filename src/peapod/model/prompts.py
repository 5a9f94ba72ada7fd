"""The soft prompts prepended to the encoder input: per task, and per user (two designs).

All modules are batched: they take a (B,) tensor of task ids or user rows and return (B, length, d_model).
User rows index the (U, D) user-embedding table (row i = the i-th user of the embedding's id index); the
caller maps user id strings to rows (:func:`peapod.model.peapod.lookup_rows`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError

#: Users sampled (evenly spaced rows) to set the component prompt's initial scale.
SCALE_SAMPLE_USERS = 2048


class TaskPrompt(nn.Module):
    """One learnable soft prompt per task (reference: 3 tasks x 3 vectors, init U(-0.1, 0.1))."""

    def __init__(self, n_tasks: int = 3, length: int = 3, d_model: int = 512):
        super().__init__()
        if n_tasks < 1 or length < 1:
            raise ConfigError(f"task prompt needs n_tasks >= 1 and length >= 1, got {n_tasks}, {length}")
        self.length = length
        self.prompts = nn.Parameter(torch.empty(n_tasks, length, d_model).uniform_(-0.1, 0.1))

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        """(B,) task ids -> (B, length, d_model)."""
        return self.prompts[task_ids.to(self.prompts.device)]


class UserTable(nn.Module):
    """The (U, D) user embeddings: a frozen buffer (default, as the paper) or a trainable embedding."""

    def __init__(self, embeddings: torch.Tensor, trainable: bool = False):
        super().__init__()
        if embeddings.dim() != 2 or embeddings.shape[0] < 1:
            raise ConfigError(f"user embeddings must be a non-empty (users, dim) matrix, got {tuple(embeddings.shape)}")
        embeddings = embeddings.detach().to(torch.float32).clone()
        self.trainable = trainable
        if trainable:
            self.table = nn.Embedding.from_pretrained(embeddings, freeze=False)
        else:
            self.register_buffer("embeddings", embeddings)

    @property
    def weight(self) -> torch.Tensor:
        """The (U, D) matrix."""
        return self.table.weight if self.trainable else self.embeddings

    @property
    def n_users(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows of any shape -> embeddings of that shape + (D,)."""
        rows = rows.to(self.weight.device)
        return self.table(rows) if self.trainable else self.embeddings[rows]


class ComponentUserPrompt(nn.Module):
    """User-personalized prompt from decomposed prompt components (paper text, section 4; CODA-Prompt).

    For the user's embedding q (the query, D dims) and M components with attention vectors A (M x D),
    keys K (M x D) and prompts P (M x L x d)::

        lambda_m = q * A_m                    (element-wise, eq. 1)
        alpha_m  = cos(lambda_m, K_m)         (one scalar per component, eq. 2)
        prompt   = scale * sum_m alpha_m P_m  (L x d, eq. 3)

    Choices for the ambiguities of the paper text (reference-protocol.md section 5b):

    1. alpha is one scalar per component (B x M), not M x D or M x L as eq. 2's notation suggests.
    2. Raw cosine in [-1, 1], no softmax (as CODA-Prompt).
    3. Scale: orthonormal rows of length L*d have entries ~1/sqrt(L*d) and random-init cosines are small,
       so the raw prompt is ~100x smaller than token embeddings. A learnable scalar ``scale`` is added,
       initialised so that the prompt's RMS over (a sample of) the users equals ``target_rms`` (PeaPOD
       passes the RMS of the backbone's token embeddings); ``target_rms=None`` keeps the raw scale (1.0).
    4. q is frozen (a buffer) by default, as in the paper and the public code; ``train_user_embeddings``
       makes it an ``nn.Embedding`` initialised from the given embeddings.
    5. No orthogonality penalty during training (the paper mentions the initialisation only).
    6. Placement is the caller's (PeaPOD: [task prompt ; user prompt ; text], the public code's order).
    7. M is ``n_components`` and unrelated to the neighbour count k of :class:`NeighborUserPrompt`.

    D need not equal d: A and K live in the user-embedding space, P in the model's. P (viewed (M, L*d)),
    K and A are initialised with orthonormal rows (``torch.nn.init.orthogonal_``, QR of a Gaussian), which
    requires M <= D and M <= L*d; otherwise a :class:`ConfigError` is raised.
    The cosine is computed without the (B, M, D) intermediate:
    ``alpha = (q @ (A*K)^T) / (sqrt(q^2 @ (A^2)^T) * |K|)``.
    """

    def __init__(
        self,
        n_users: int,
        user_dim: int,
        d_model: int,
        n_components: int = 20,
        length: int = 3,
        user_embeddings: torch.Tensor | None = None,
        train_user_embeddings: bool = False,
        target_rms: float | None = 1.0,
        eps: float = 1e-8,
    ):
        super().__init__()
        if n_components < 1 or length < 1:
            raise ConfigError(f"components prompt needs n_components >= 1 and length >= 1, got {n_components}, {length}")
        if n_components > user_dim:
            raise ConfigError(
                f"n_components (M={n_components}) exceeds the user-embedding dimension (D={user_dim}): "
                "M orthogonal keys/attention vectors do not exist; lower model.n_components or raise embedding.dim"
            )
        if n_components > length * d_model:
            raise ConfigError(
                f"n_components (M={n_components}) exceeds length * d_model ({length * d_model}): "
                "orthogonal prompt components do not exist"
            )
        if user_embeddings is None:
            user_embeddings = torch.zeros(n_users, user_dim)
        if tuple(user_embeddings.shape) != (n_users, user_dim):
            raise ConfigError(
                f"user embeddings have shape {tuple(user_embeddings.shape)}, expected ({n_users}, {user_dim})"
            )
        self.length = length
        self.d_model = d_model
        self.eps = eps
        self.users = UserTable(user_embeddings, trainable=train_user_embeddings)
        self.attention = nn.Parameter(nn.init.orthogonal_(torch.empty(n_components, user_dim)))  # A
        self.keys = nn.Parameter(nn.init.orthogonal_(torch.empty(n_components, user_dim)))  # K
        components = nn.init.orthogonal_(torch.empty(n_components, length * d_model))
        self.components = nn.Parameter(components.view(n_components, length, d_model))  # P
        self.scale = nn.Parameter(torch.tensor(self._initial_scale(target_rms)))

    @property
    def n_components(self) -> int:
        return self.components.shape[0]

    def weights_for_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """(B, D) query embeddings -> (B, M) component weights alpha (raw cosines)."""
        a, k = self.attention, self.keys
        numerator = queries @ (a * k).t()
        query_norm = (queries * queries) @ (a * a).t()
        denominator = query_norm.clamp_min(self.eps * self.eps).sqrt() * k.norm(dim=1).clamp_min(self.eps)
        return numerator / denominator

    def weights(self, user_rows: torch.Tensor) -> torch.Tensor:
        """(B,) user rows -> (B, M) component weights alpha."""
        return self.weights_for_queries(self.users(user_rows))

    def prompts_for_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """(B, D) query embeddings (e.g. folded-in new users) -> (B, L, d) prompts."""
        alpha = self.weights_for_queries(queries)
        return self.scale * torch.einsum("bm,mld->bld", alpha, self.components)

    def forward(self, user_rows: torch.Tensor) -> torch.Tensor:
        """(B,) user rows -> (B, L, d) user-personalized prompts."""
        return self.prompts_for_queries(self.users(user_rows))

    @torch.no_grad()
    def _initial_scale(self, target_rms: float | None) -> float:
        if target_rms is None:
            return 1.0
        n_users = self.users.n_users
        rows = torch.linspace(0, n_users - 1, min(n_users, SCALE_SAMPLE_USERS)).round().long()
        alpha = self.weights_for_queries(self.users.weight[rows])
        raw = alpha @ self.components.view(self.n_components, -1)
        rms = raw.pow(2).mean().sqrt().item()
        if not math.isfinite(rms) or rms < 1e-12:  # all-zero embeddings (e.g. a placeholder before loading)
            return 1.0
        return float(target_rms) / rms


class NeighborUserPrompt(nn.Module):
    """User prompt from multi-head attention over the user's k most similar users (the public code, 5a).

    ``q = W_q e_u``, ``K = W_k E_N``, ``V = W_v E_N`` (``nn.Linear(D, d)`` with bias, default init), split in
    H heads of d/H; per head ``softmax(q K^T / sqrt(d/H))`` over the k neighbours weights V; the heads are
    concatenated into c (d) and the prompt is ``reshape(W_p c + b_p)`` to (L, d). The user's own embedding
    enters only through the query. Neighbours come from a (U, k) row index built beforehand (self excluded
    by its builder) and are gathered as ``E[neighbor_index[user_rows]]``. The attention is computed in the
    embedding space (the query mapped through W_k^T, the neighbours mixed before W_v): the same function as
    projecting every neighbour, at a fraction of the cost.
    """

    def __init__(
        self,
        user_embeddings: torch.Tensor,
        neighbor_index: torch.Tensor,
        d_model: int,
        length: int = 3,
        n_heads: int = 4,
        train_user_embeddings: bool = False,
    ):
        super().__init__()
        if d_model % n_heads != 0:
            raise ConfigError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if length < 1:
            raise ConfigError(f"user prompt length must be >= 1, got {length}")
        self.users = UserTable(user_embeddings, trainable=train_user_embeddings)
        n_users, dim = self.users.n_users, self.users.dim
        if neighbor_index.dim() != 2 or neighbor_index.shape[0] != n_users or neighbor_index.shape[1] < 1:
            raise ConfigError(
                f"neighbour index must be ({n_users}, k >= 1) to match the user embeddings, "
                f"got {tuple(neighbor_index.shape)}"
            )
        neighbor_index = neighbor_index.detach().to(torch.long).clone()
        if neighbor_index.numel() and (neighbor_index.min() < 0 or neighbor_index.max() >= n_users):
            raise ConfigError(f"neighbour index holds rows outside [0, {n_users})")
        self.register_buffer("neighbor_index", neighbor_index)
        self.length = length
        self.d_model = d_model
        self.n_heads = n_heads
        self.query = nn.Linear(dim, d_model)
        self.key = nn.Linear(dim, d_model)
        self.value = nn.Linear(dim, d_model)
        self.project = nn.Linear(d_model, length * d_model)

    @property
    def n_neighbors(self) -> int:
        return self.neighbor_index.shape[1]

    def attention_weights(self, user_rows: torch.Tensor) -> torch.Tensor:
        """(B,) user rows -> (B, H, k) attention of each head over the neighbours."""
        return self._attend(user_rows)[1]

    def forward(self, user_rows: torch.Tensor) -> torch.Tensor:
        """(B,) user rows -> (B, L, d) user prompts."""
        return self._attend(user_rows)[0]

    def _attend(self, user_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        own = self.users(user_rows)  # (B, D)
        neighbors = self.users(self.neighbor_index[user_rows.to(self.neighbor_index.device)])  # (B, k, D)
        return self.prompts_from_embeddings(own, neighbors)

    def prompts_from_embeddings(
        self, own: torch.Tensor, neighbors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query embeddings (B, D) and neighbour embeddings (B, k, D) -> (prompts (B, L, d), attention (B, H, k)).

        For users outside the table (folded-in embeddings and their neighbours) as well as table rows.
        """
        # Same function as projecting every neighbour with W_k and W_v, computed in the embedding space:
        #   q_h . (W_k,h e_j + b_k,h) = (W_k,h^T q_h) . e_j + q_h . b_k,h
        #   sum_j a_hj (W_v,h e_j + b_v,h) = W_v,h (sum_j a_hj e_j) + b_v,h      (sum_j a_hj = 1)
        # which costs O(B k D H + B D d) instead of O(B k D d) (H = 4 << d = 512).
        batch = own.shape[0]
        heads, head_dim = self.n_heads, self.d_model // self.n_heads
        dim = self.users.dim
        q = self.query(own).view(batch, heads, head_dim)
        key_weight = self.key.weight.view(heads, head_dim, dim)
        query_in_d = torch.einsum("bhe,hed->bhd", q, key_weight)  # (B, H, D)
        query_bias = torch.einsum("bhe,he->bh", q, self.key.bias.view(heads, head_dim))
        scores = torch.einsum("bhd,bkd->bhk", query_in_d, neighbors) + query_bias[:, :, None]
        attn = torch.softmax(scores / math.sqrt(head_dim), dim=-1)  # (B, H, k)
        mixed = torch.einsum("bhk,bkd->bhd", attn, neighbors)  # (B, H, D)
        value_weight = self.value.weight.view(heads, head_dim, dim)
        context = torch.einsum("bhd,hed->bhe", mixed, value_weight) + self.value.bias.view(heads, head_dim)
        prompt = self.project(context.reshape(batch, self.d_model)).view(batch, self.length, self.d_model)
        return prompt, attn
