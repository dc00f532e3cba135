"""GaLore (Zhao et al. 2024, arXiv 2403.03507) through the PyPI package ``galore-torch==1.0``.

This module only selects the matrices and builds the package's ``GaLoreAdamW``; the algorithm is
the package's, unchanged. What it does, read from its code (and not "fixed" here):

* Every low-rank matrix G (m x n) gets a projector from an SVD of its gradient, recomputed when the
  matrix's own step counter (0-based, read before the increment) is a multiple of
  ``update_proj_gap`` = T, i.e. at optimizer steps 1, T+1, 2T+1, ...
  ``proj_type="std"``: right projection (moments m x r) if m >= n, else left (r x n).
* Adam moments live in the subspace and are neither reset nor rotated when the projector changes.
* Hugging Face-style AdamW: the step size is lr * sqrt(1 - beta2^t) / (1 - beta1^t) and eps is
  added to sqrt(v) before bias correction; the package's default eps is 1e-6 (torch's is 1e-8).
* The back-projected update is multiplied by ``scale`` (the paper's alpha).
* Decoupled weight decay is applied **after** the update (to the already-updated weight).
* Parameters outside the low-rank groups get the same Hugging Face-style AdamW.
* ``GaLoreAdamW8bit`` calls ``torch.cuda.synchronize()`` unconditionally and fails on CPU; it is not
  used here.

Under FSDP2 (``fully_shard``) the package's step runs on each projected matrix gathered whole
(:mod:`alphaadam.optim.gathered`); the result equals the unsharded step.

The projector is a Python object in the optimizer state; ``state_dict()`` here stores it as plain
tensors, so checkpoints load with ``torch.load(weights_only=True)`` and resume exactly.
"""

from __future__ import annotations

import functools

import torch

from alphaadam.optim.common import evaluate_closure
from alphaadam.optim.families import lowrank_param_groups, lowrank_targets
from alphaadam.optim.gathered import step_whole_matrices
from alphaadam.optim.param_groups import NamedParameters
from alphaadam.optim.sharding import DTensor

PROJ_TYPES = ("std", "reverse_std", "left", "right", "full")


def _projector_to_dict(projector) -> dict:
    """The projector's matrices only: its settings are the param group's, and torch's loader would
    mangle strings (it rebuilds every iterable in the state element by element)."""
    ortho = projector.ortho_matrix
    if isinstance(ortho, (list, tuple)):  # proj_type="full" keeps [left, right]
        return {"ortho_left": ortho[0], "ortho_right": ortho[1]}
    return {} if ortho is None else {"ortho_matrix": ortho}


def _state_dict_post_hook(optimizer, state_dict: dict) -> dict:
    state = {}
    for key, value in state_dict["state"].items():
        if "projector" in value and not isinstance(value["projector"], dict):
            value = {**value, "projector": _projector_to_dict(value["projector"])}
        state[key] = value
    return {**state_dict, "state": state}


def _load_state_dict_post_hook(optimizer) -> None:
    from galore_torch.galore_projector import GaLoreProjector

    for group in optimizer.param_groups:
        for p in group["params"]:
            saved = optimizer.state.get(p, {}).get("projector")
            if not isinstance(saved, dict):
                continue
            projector = GaLoreProjector(
                group["rank"],
                update_proj_gap=group["update_proj_gap"],
                scale=group["scale"],
                proj_type=group["proj_type"],
            )
            if "ortho_left" in saved:
                projector.ortho_matrix = [saved["ortho_left"], saved["ortho_right"]]
            else:
                projector.ortho_matrix = saved.get("ortho_matrix")
            optimizer.state[p]["projector"] = projector


@functools.cache
def sharded_galore_class() -> type:
    """``GaLoreAdamW`` for FSDP2 shards: the package's step, unchanged, on each projected matrix
    made whole (:mod:`alphaadam.optim.gathered`). Built on first use: galore-torch loads slowly."""
    from galore_torch import GaLoreAdamW

    class ShardedGaLoreAdamW(GaLoreAdamW):
        @torch.no_grad()
        def step(self, closure=None):
            loss = evaluate_closure(closure)
            step_whole_matrices(self, lambda group: "rank" in group, self._step_groups)
            return loss

        def _step_groups(self, groups: list[dict]) -> None:
            # the package's step reads self.param_groups: show it only the given groups
            own, self.param_groups = self.param_groups, groups
            try:
                super().step()
            finally:
                self.param_groups = own

    return ShardedGaLoreAdamW


def check_ranks(params: NamedParameters, targets: set[str], rank: int) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ValueError(f"rank={rank!r} must be a positive integer")
    for name, p in params.named:
        if name in targets and rank > min(p.shape):
            raise ValueError(
                f"rank={rank} exceeds the smaller side ({min(p.shape)}) of the {tuple(p.shape)} "
                f"matrix {name!r}; GaLore would silently use a lower rank there"
            )


def build_galore(
    params: NamedParameters,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    weight_decay_rule: str = "ndim",
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 0.25,
    proj_type: str = "std",
    correct_bias: bool = True,
    family: str | None = None,
    targets: list[str] | None = None,
) -> torch.optim.Optimizer:
    """``galore_torch.GaLoreAdamW`` on the attention and MLP matrices of a GPT, RoBERTa or Llama model.

    ``family`` ("gpt", "roberta", "llama") is detected from the model or names when not given;
    ``targets`` (regular expressions) replaces the family's choice of matrices. Defaults are the
    package README's (pre-training: rank 128, T = 200, scale 0.25, eps 1e-6); the AlphaAdam paper's
    settings are in ``configs/optimizer/galore.yaml``.
    """
    from galore_torch import GaLoreAdamW

    chosen = lowrank_targets(params, family, targets)
    check_ranks(params, chosen, rank)
    if not isinstance(update_proj_gap, int) or isinstance(update_proj_gap, bool) or update_proj_gap <= 0:
        raise ValueError(f"update_proj_gap={update_proj_gap!r} must be a positive integer")
    if proj_type not in PROJ_TYPES:
        raise ValueError(f"proj_type={proj_type!r} is not one of {PROJ_TYPES}")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
        raise ValueError(f"scale={scale!r} must be a positive number")
    if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay!r} must be a number >= 0")
    lowrank = dict(rank=rank, update_proj_gap=update_proj_gap, scale=float(scale), proj_type=proj_type)
    groups = lowrank_param_groups(params, chosen, weight_decay, weight_decay_rule, lowrank, {})
    sharded = any(isinstance(p, DTensor) for _, p in params.named)
    optimizer = (sharded_galore_class() if sharded else GaLoreAdamW)(
        groups,
        lr=lr,
        betas=tuple(betas),
        eps=eps,
        weight_decay=weight_decay,
        correct_bias=correct_bias,
        no_deprecation_warning=True,
    )
    optimizer.register_state_dict_post_hook(_state_dict_post_hook)
    optimizer.register_load_state_dict_post_hook(_load_state_dict_post_hook)
    return optimizer
