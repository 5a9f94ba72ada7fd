"""Soft-prompt modules: shapes, gradients, initialisation, neighbour gathering, against loop oracles."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from peapod.errors import ConfigError, UnknownIdError
from peapod.model.peapod import lookup_rows
from peapod.model.prompts import ComponentUserPrompt, NeighborUserPrompt, TaskPrompt

torch.set_num_threads(1)

U, D, DM, M, L = 12, 16, 8, 5, 3


@pytest.fixture()
def embeddings() -> torch.Tensor:
    return torch.randn(U, D, generator=torch.Generator().manual_seed(0))


def neighbor_index_for(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k cosine neighbours, the user itself excluded."""
    normed = F.normalize(embeddings, dim=1)
    sims = normed @ normed.t()
    sims.fill_diagonal_(-math.inf)
    return sims.topk(k, dim=1).indices


# ---------------------------------------------------------------------------------------- task prompt
def test_task_prompt_shapes_init_and_grad():
    torch.manual_seed(0)
    prompt = TaskPrompt(n_tasks=3, length=3, d_model=DM)
    assert prompt.prompts.shape == (3, 3, DM)
    assert prompt.prompts.abs().max() <= 0.1
    tasks = torch.tensor([2, 0, 2, 1])
    out = prompt(tasks)
    assert out.shape == (4, 3, DM)
    assert torch.equal(out[0], prompt.prompts[2]) and torch.equal(out[1], prompt.prompts[0])
    out.sum().backward()
    assert prompt.prompts.grad[2].eq(2).all() and prompt.prompts.grad[0].eq(1).all()


# ---------------------------------------------------------------------------------------- components
def test_component_prompt_matches_formula(embeddings):
    torch.manual_seed(0)
    module = ComponentUserPrompt(U, D, DM, n_components=M, length=L, user_embeddings=embeddings)
    rows = torch.tensor([0, 3, 3, 11])
    out = module(rows)
    assert out.shape == (4, L, DM)
    q = embeddings[rows]
    lam = q[:, None, :] * module.attention[None]  # (B, M, D), eq. 1
    alpha = F.cosine_similarity(lam, module.keys[None].expand_as(lam), dim=-1)  # (B, M), eq. 2
    assert torch.allclose(module.weights(rows), alpha, atol=1e-6)
    expected = module.scale * (alpha[:, :, None, None] * module.components[None]).sum(1)  # eq. 3
    assert torch.allclose(out, expected, atol=1e-5)


def test_component_weights_differ_across_users(embeddings):
    torch.manual_seed(1)
    module = ComponentUserPrompt(U, D, DM, n_components=M, length=L, user_embeddings=embeddings)
    alpha = module.weights(torch.arange(U))
    assert alpha.shape == (U, M)
    assert (alpha.abs() <= 1 + 1e-6).all()
    assert alpha.std(dim=1).min() > 0  # not all equal within a user
    assert torch.cdist(alpha, alpha)[~torch.eye(U, dtype=torch.bool)].min() > 1e-4  # users differ
    prompts = module(torch.arange(U))
    assert not torch.allclose(prompts[0], prompts[1])


def test_component_orthogonal_init(embeddings):
    torch.manual_seed(2)
    module = ComponentUserPrompt(U, D, DM, n_components=M, length=L, user_embeddings=embeddings)
    eye = torch.eye(M)
    p = module.components.detach().reshape(M, -1)
    assert torch.allclose(p @ p.t(), eye, atol=1e-5)
    assert torch.allclose(module.keys @ module.keys.t(), eye, atol=1e-5)
    assert torch.allclose(module.attention @ module.attention.t(), eye, atol=1e-5)


def test_component_scale_matches_target_rms(embeddings):
    torch.manual_seed(3)
    module = ComponentUserPrompt(U, D, DM, n_components=M, length=L, user_embeddings=embeddings, target_rms=0.7)
    rms = module(torch.arange(U)).pow(2).mean().sqrt().item()
    assert rms == pytest.approx(0.7, rel=1e-4)
    raw = ComponentUserPrompt(U, D, DM, n_components=M, length=L, user_embeddings=embeddings, target_rms=None)
    assert raw.scale.item() == 1.0


def test_component_gradients_frozen_users(embeddings):
    torch.manual_seed(4)
    module = ComponentUserPrompt(U, D, DM, n_components=M, length=L, user_embeddings=embeddings)
    assert all("users" not in name for name, _ in module.named_parameters())
    module(torch.tensor([1, 2, 5])).pow(2).sum().backward()
    for param in (module.attention, module.keys, module.components, module.scale):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert not module.users.embeddings.requires_grad


def test_component_gradients_trained_users(embeddings):
    torch.manual_seed(5)
    module = ComponentUserPrompt(
        U, D, DM, n_components=M, length=L, user_embeddings=embeddings, train_user_embeddings=True
    )
    assert torch.equal(module.users.weight.detach(), embeddings)
    module(torch.tensor([1, 2])).pow(2).sum().backward()
    grad = module.users.table.weight.grad
    assert grad[1].abs().sum() > 0 and grad[2].abs().sum() > 0 and grad[0].abs().sum() == 0


def test_component_config_errors(embeddings):
    with pytest.raises(ConfigError, match="exceeds the user-embedding dimension"):
        ComponentUserPrompt(U, D, DM, n_components=D + 1, length=L, user_embeddings=embeddings)
    with pytest.raises(ConfigError, match="expected"):
        ComponentUserPrompt(U + 1, D, DM, n_components=M, length=L, user_embeddings=embeddings)


# ---------------------------------------------------------------------------------------- neighbours
def _neighbor_oracle(module: NeighborUserPrompt, embeddings, index, rows) -> torch.Tensor:
    """Per-sample loop: gather neighbours one by one, per-head softmax attention, projection."""
    heads, hd = module.n_heads, module.d_model // module.n_heads
    outs = []
    for r in rows.tolist():
        own = embeddings[r]
        neigh = torch.stack([embeddings[j] for j in index[r].tolist()])
        q, k, v = module.query(own), module.key(neigh), module.value(neigh)
        parts = []
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            weights = torch.softmax(k[:, sl] @ q[sl] / math.sqrt(hd), dim=0)
            parts.append(weights @ v[:, sl])
        outs.append(module.project(torch.cat(parts)).view(module.length, module.d_model))
    return torch.stack(outs)


def test_neighbor_prompt_matches_loop_oracle(embeddings):
    torch.manual_seed(6)
    index = neighbor_index_for(embeddings, k=4)
    assert not (index == torch.arange(U)[:, None]).any()  # self never a neighbour
    module = NeighborUserPrompt(embeddings, index, d_model=DM, length=L, n_heads=2)
    rows = torch.tensor([0, 5, 5, 11])
    out = module(rows)
    assert out.shape == (4, L, DM)
    assert torch.allclose(out, _neighbor_oracle(module, embeddings, index, rows), atol=1e-5)
    attn = module.attention_weights(rows)
    assert attn.shape == (4, 2, 4) and torch.allclose(attn.sum(-1), torch.ones(4, 2))


def test_neighbor_gradients(embeddings):
    torch.manual_seed(7)
    index = neighbor_index_for(embeddings, k=3)
    module = NeighborUserPrompt(embeddings, index, d_model=DM, length=L, n_heads=4)
    module(torch.tensor([0, 1, 2])).pow(2).sum().backward()
    for layer in (module.query, module.key, module.value, module.project):
        assert layer.weight.grad.abs().sum() > 0 and layer.bias.grad is not None
    assert not module.users.embeddings.requires_grad
    trained = NeighborUserPrompt(embeddings, index, d_model=DM, length=L, n_heads=4, train_user_embeddings=True)
    trained(torch.tensor([0])).pow(2).sum().backward()
    grad = trained.users.table.weight.grad
    touched = {0, *index[0].tolist()}
    assert all(grad[i].abs().sum() > 0 for i in touched)
    assert all(grad[i].abs().sum() == 0 for i in range(U) if i not in touched)


def test_neighbor_config_errors(embeddings):
    index = neighbor_index_for(embeddings, k=3)
    with pytest.raises(ConfigError, match="divisible"):
        NeighborUserPrompt(embeddings, index, d_model=DM, n_heads=3)
    with pytest.raises(ConfigError, match="must be"):
        NeighborUserPrompt(embeddings, index[:-1], d_model=DM)
    with pytest.raises(ConfigError, match="outside"):
        NeighborUserPrompt(embeddings, index + U, d_model=DM)


# ---------------------------------------------------------------------------------------- id lookup
def test_lookup_rows_and_unknown_ids():
    index = {"u1": 0, "u2": 1}
    assert lookup_rows(index, ["u2", "u1", "u2"]).tolist() == [1, 0, 1]
    with pytest.raises(UnknownIdError, match="'u9'") as err:
        lookup_rows(index, ["u1", "u9"])
    assert isinstance(err.value, KeyError)
    assert "fold new users" in str(err.value)
