"""LDAdam (Robert, Safaryan, Modoranu, Alistarh 2024, arXiv 2410.16103), written here.

Low-rank Adam: the moments of a weight matrix live in an r-dimensional subspace of its gradients,
refreshed at **every** step by one block power iteration warm-started from the previous basis;
both moments are carried from the old subspace to the new one ("projection-aware" update), and
what the projections lose is fed back into the next gradient ("generalised error feedback").

The algorithm follows the authors' code (IST-DASLab/LDAdam, ``ldadamw_torch``, Apache-2.0, commit
f3c5daf, after fix c9cd09a) step by step; this is an independent implementation (the steps are
listed in :class:`LDAdam`).

Error feedback keeps the compression error of every low-rank matrix in ``state["error_buffer"]``,
which is the *same tensor* as ``p.grad`` after a step (no extra memory): ``optimizer.zero_grad()``
keeps it, so the next backward pass adds the new gradient to it, as in the reference. When
``p.grad`` is freed instead (``model.zero_grad()``, which the Hugging Face Trainer calls after every
step), the error stays in the state and ``step()`` adds it to the fresh gradient: the same sum, at
the cost of one extra gradient-sized tensor per low-rank matrix during the backward pass. Gradient
clipping and loss scaling then act on the fresh gradient alone (with ``optimizer.zero_grad()``
they act on gradient + error, as in the reference). ``state_dict()`` includes the error buffers,
so a resumed run continues the same trajectory.

Under FSDP2 (``fully_shard``) each low-rank matrix is gathered and stepped whole on every rank
(:mod:`alphaadam.optim.gathered`), which equals the unsharded step; its error buffer is then the
sharded gradient, which FSDP2's backward pass accumulates into.
"""

from __future__ import annotations

import torch

from alphaadam.optim.base import state_dtype
from alphaadam.optim.common import (
    KeepsStateDtypes,
    check_adam_group,
    check_number,
    check_positive_int,
    evaluate_closure,
    param_name,
    params_with_grad,
)
from alphaadam.optim.families import lowrank_param_groups, lowrank_targets
from alphaadam.optim.gathered import step_whole_matrices
from alphaadam.optim.param_groups import NamedParameters

PROJ_TYPES = ("std", "reverse_std", "left", "right")
PROJ_METHODS = ("power_iteration", "svd")


def projects_left(shape: torch.Size | tuple[int, int], proj_type: str) -> bool:
    """Whether a (m x n) matrix is projected from the left (moments r x n) or right (m x r).

    As in the reference: ``std`` projects from the right when m > n and from the left otherwise
    (so a square matrix is projected from the left, unlike GaLore's ``std``); ``reverse_std`` is
    the opposite.
    """
    m, n = shape
    if proj_type == "left":
        return True
    if proj_type == "right":
        return False
    if proj_type == "std":
        return m <= n
    return m >= n  # reverse_std


def _project(basis: torch.Tensor, x: torch.Tensor, left: bool) -> torch.Tensor:
    return basis.T @ x if left else x @ basis.T


def _back(basis: torch.Tensor, x: torch.Tensor, left: bool) -> torch.Tensor:
    return basis @ x if left else x @ basis


def svd_basis(matrix: torch.Tensor, rank: int, left: bool) -> torch.Tensor:
    """Top-``rank`` left singular vectors (m x r) or right singular vectors (r x n)."""
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u[:, :rank].contiguous() if left else vh[:rank].contiguous()


def power_iteration_basis(matrix: torch.Tensor, previous: torch.Tensor, left: bool) -> torch.Tensor:
    """One block power iteration on ``matrix`` warm-started from ``previous``, orthonormalised by QR."""
    if left:  # previous: m x r
        q, _ = torch.linalg.qr(matrix @ (matrix.T @ previous))
        # row-major like every other basis: a checkpoint loaded into a row-major tensor then
        # multiplies bit for bit as the uninterrupted run (BLAS rounding depends on the layout)
        return q.contiguous()
    q, _ = torch.linalg.qr(matrix.T @ (matrix @ previous.T))  # previous: r x n
    return q.T.contiguous()


class LDAdam(KeepsStateDtypes, torch.optim.Optimizer):
    r"""LDAdam: Adam with low-rank moments, projection-aware transport and generalised error feedback.

    Param groups with ``lowrank=True`` hold 2-D matrices that get the low-rank update; other groups
    (embeddings, norms, biases, heads) get the reference's AdamW step. Per low-rank matrix G (m x n)
    at its k-th update (k = 0, 1, ...; one counter per parameter, which equals the reference's
    optimizer-wide counter because the error buffer keeps every low-rank ``p.grad`` alive), with
    ``g = p.grad`` (= fresh gradient + error buffer, see the module notes):

    1. Subspace. k = 0: top-r singular vectors of g (SVD). k > 0: b = rho * P_old(m) / (1 - beta1^k)
       + (1 - rho) * g, where P_old(m) is the back-projected first moment; one block power iteration
       on b from the previous basis, QR-orthonormalised (``proj_method="svd"``: SVD of b instead).
    2. g_low = project(g); error feedback: ``p.grad = g - back(g_low)``.
    3. Change of basis C = Q_new^T Q_old (left) or P_old P_new^T (right); m' = C m (or m C).
       Error feedback of the state compression: ``p.grad += beta1/(1-beta1) (P_old(m) - P_new(m'))``.
    4. Second moment (k > 0), with bc_i = 1 - beta_i^k: v <- v/bc2 - m^2/bc1^2, transported by C*C
       (elementwise square), + m'^2/bc1^2, times bc2, absolute value; then m <- m'.
    5. Adam in the subspace: m <- beta1 m + (1-beta1) g_low; v <- beta2 v + (1-beta2) g_low^2;
       d = (m / (1-beta1^{k+1})) / (sqrt(v / (1-beta2^{k+1})) + eps).
    6. theta <- theta (1 - lr wd) - lr back(d).

    Args:
        lowrank: default for groups that do not say (the reference's ``enable_lowrank``).
        rank: subspace dimension r; must not exceed the projected side of any low-rank matrix.
        rho: weight of the momentum in the matrix whose subspace is tracked.
        proj_type: ``"std"`` (right projection if m > n, else left), ``"reverse_std"``, ``"left"``,
            ``"right"``.
        proj_method: ``"power_iteration"`` (the paper's) or ``"svd"``.
        error_feedback: feed the compression error into the next step (see the module notes).

    Defaults are the reference's (betas (0.908, 0.99), rho 0.908, eps 1e-8); its GLUE runs use rank 8.
    Moments and bases of bf16/fp16 parameters are fp32; SVD and QR run in fp32, or fp64 for fp64
    parameters (the reference always uses fp32).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.908, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        lowrank: bool = False,
        rank: int = 16,
        rho: float = 0.908,
        proj_type: str = "std",
        proj_method: str = "power_iteration",
        error_feedback: bool = True,
    ):
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            lowrank=lowrank,
            rank=rank,
            rho=rho,
            proj_type=proj_type,
            proj_method=proj_method,
            error_feedback=error_feedback,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_adam_group(group)
        for key in ("lowrank", "error_feedback"):
            if not isinstance(group[key], bool):
                raise ValueError(f"{key}={group[key]!r} must be True or False")
        check_positive_int("rank", group["rank"])
        check_number("rho", group["rho"], 0.0, 1.0, high_open=True)
        if group["proj_type"] not in PROJ_TYPES:
            raise ValueError(f"proj_type={group['proj_type']!r} is not one of {PROJ_TYPES}")
        if group["proj_method"] not in PROJ_METHODS:
            raise ValueError(f"proj_method={group['proj_method']!r} is not one of {PROJ_METHODS}")
        for i, p in enumerate(group["params"]):
            if not p.is_floating_point():
                raise ValueError(f"LDAdam needs floating-point parameters, got {p.dtype}")
            if not group["lowrank"]:
                continue
            if p.dim() != 2:
                raise ValueError(
                    f"low-rank parameter {param_name(group, i)} has shape {tuple(p.shape)}; "
                    "only matrices can be projected (put it in a group with lowrank=False)"
                )
            side = p.shape[0] if projects_left(p.shape, group["proj_type"]) else p.shape[1]
            if group["rank"] > side:
                raise ValueError(
                    f"rank={group['rank']} exceeds the projected side ({side}) of the "
                    f"{tuple(p.shape)} parameter {param_name(group, i)}"
                )

    # -- gradients and the error buffer ---------------------------------------------------------

    def _error_buffer(self, p: torch.Tensor) -> torch.Tensor | None:
        state = self.state.get(p)
        return state.get("error_buffer") if state else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear gradients, except the error buffers of low-rank matrices (error feedback on)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p.grad is self._error_buffer(p):
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    p.grad.zero_()

    def _restore_error_buffers(self) -> None:
        """Give back the error that freeing ``p.grad`` (``model.zero_grad()``) took out of it."""
        for group in self.param_groups:
            for p in group["params"]:
                buffer = self._error_buffer(p)
                if buffer is None or p.grad is buffer:
                    continue
                if p.grad is None:  # no gradient this step: the error alone, as in the reference
                    p.grad = buffer
                else:  # a fresh gradient: fresh + error, the sum the backward pass would have made
                    p.grad.add_(buffer)

    def load_state_dict(self, state_dict: dict) -> None:
        """Load the state and make each saved error buffer ``p.grad`` again."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for p in group["params"]:
                buffer = self._error_buffer(p)
                if buffer is not None:
                    p.grad = buffer

    # -- the step ---------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        self._restore_error_buffers()
        # FSDP2 shards of low-rank matrices are stepped whole (docs/distributed.md)
        step_whole_matrices(self, lambda group: group["lowrank"], self._step_groups)
        return loss

    def _step_groups(self, groups: list[dict]) -> None:
        for group, _, p in params_with_grad(self, groups):
            if group["lowrank"]:
                self._lowrank_step(group, p)
            else:
                self._adamw_step(group, p)

    def _adamw_step(self, group: dict, p: torch.Tensor) -> None:
        """The reference's AdamW step for parameters outside the low-rank groups."""
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, dtype=state_dtype(p), memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(
                p, dtype=state_dtype(p), memory_format=torch.preserve_format
            )
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        state["step"] += 1
        t = int(state["step"].item())
        m, v = state["exp_avg"], state["exp_avg_sq"]
        g = p.grad.to(m.dtype)
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        direction = m / (v / (1 - beta2**t)).sqrt_().add_(eps) / (1 - beta1**t)
        p.mul_(1 - lr * group["weight_decay"])
        p.add_(direction.to(p.dtype), alpha=-lr)

    def _lowrank_step(self, group: dict, p: torch.Tensor) -> None:
        state = self.state[p]
        left = projects_left(p.shape, group["proj_type"])
        rank = group["rank"]
        if not state:
            shape = (rank, p.shape[1]) if left else (p.shape[0], rank)
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros(shape, dtype=state_dtype(p), device=p.device)
            state["exp_avg_sq"] = torch.zeros(shape, dtype=state_dtype(p), device=p.device)
        beta1, beta2 = group["betas"]
        lr, eps, rho = group["lr"], group["eps"], group["rho"]
        error_feedback = group["error_feedback"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        k = int(state["step"].item())  # updates so far
        grad = p.grad
        g = grad.to(m.dtype)

        # 1. the new subspace
        previous = state.get("basis")
        if previous is None:
            basis = svd_basis(g, rank, left)
        else:
            old_m = _back(previous, m, left)  # the first moment, back in the parameter's space
            tracked = old_m * (rho / (1 - beta1**k))
            tracked.add_(g, alpha=1 - rho)
            if group["proj_method"] == "svd":
                basis = svd_basis(tracked, rank, left)
            else:
                basis = power_iteration_basis(tracked, previous, left)
            del tracked

        # 2. project the gradient; the compression error stays in p.grad
        g_low = _project(basis, g, left)
        if error_feedback:
            grad.sub_(_back(basis, g_low, left).to(grad.dtype))

        if previous is not None:
            # 3. first moment into the new basis, and the error this transport makes
            change = basis.T @ previous if left else previous @ basis.T  # r x r
            m_new = change @ m if left else m @ change
            if error_feedback:
                lost = old_m.sub_(_back(basis, m_new, left))
                grad.add_(lost.mul_(beta1 / (1 - beta1)).to(grad.dtype))
                del lost
            del old_m
            # 4. second moment: per-coordinate variance in the old basis, transported by C*C
            bc1, bc2 = 1 - beta1**k, 1 - beta2**k
            variance = v / bc2 - m * m / bc1**2
            change.mul_(change)
            variance = change @ variance if left else variance @ change
            v.copy_(variance.add_(m_new * m_new / bc1**2).mul_(bc2).abs_())
            m.copy_(m_new)

        # 5. Adam in the subspace
        state["step"] += 1
        t = k + 1
        m.mul_(beta1).add_(g_low, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g_low, g_low, value=1 - beta2)
        direction = m / (v / (1 - beta2**t)).sqrt_().add_(eps) / (1 - beta1**t)

        # 6. decoupled weight decay and the update
        p.mul_(1 - lr * group["weight_decay"])
        p.add_(_back(basis, direction, left).to(p.dtype), alpha=-lr)
        state["basis"] = basis
        if error_feedback:
            state["error_buffer"] = grad


def build_ldadam(
    params: NamedParameters,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.908, 0.99),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_rule: str = "ndim",
    rank: int = 16,
    rho: float = 0.908,
    proj_type: str = "std",
    proj_method: str = "power_iteration",
    error_feedback: bool = True,
    family: str | None = None,
    targets: list[str] | None = None,
) -> LDAdam:
    """LDAdam on the attention and MLP matrices of a GPT, RoBERTa or Llama model, AdamW elsewhere.

    The matrices are those of :func:`alphaadam.optim.families.lowrank_targets` (for RoBERTa the same
    as the reference's GLUE script: query, key, value, attention.output.dense, intermediate.dense,
    output.dense); ``targets`` (regular expressions) replaces the family's choice.
    """
    chosen = lowrank_targets(params, family, targets)
    lowrank = dict(lowrank=True, rank=rank, rho=rho, proj_type=proj_type, proj_method=proj_method)
    groups = lowrank_param_groups(
        params, chosen, weight_decay, weight_decay_rule, lowrank, {"lowrank": False}
    )
    return LDAdam(
        groups,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        rank=rank,
        rho=rho,
        proj_type=proj_type,
        proj_method=proj_method,
        error_feedback=error_feedback,
    )
