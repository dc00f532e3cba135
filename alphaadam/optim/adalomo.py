"""AdaLomo (Lv et al., arXiv 2310.10195): a factored second moment and a relative step size, with no
first moment, written so that each parameter can be updated on its own as soon as its gradient exists.

Per parameter θ with gradient g, at step t (counted per parameter, from 1):

    β2_t = 1 - t^c                              (c = decay_rate = -0.8: β2_1 = 0, then -> 1)
    s    = g² + eps1
    matrix (m x n, higher ranks as shape[0] x rest):
        r <- β2_t r + (1 - β2_t) rowmean(s),  c <- β2_t c + (1 - β2_t) colmean(s)
        u = g / sqrt(v̂),  v̂_ij = r_i c_j / mean(r)
    vector: v <- β2_t v + (1 - β2_t) s,  u = g / sqrt(v)
    u <- u / max(1, RMS(u) / clip_threshold)     (grouped update normalisation: one tensor at a time)
    α = lr · max(eps2, RMS(θ))                   (relative step size)
    θ <- θ (1 - α wd) - α u

This is the rule of the authors' ``lomo-optim`` package (tested for equality in
``tests/test_adalomo.py``); the package only runs it inside backward and takes the model, not param
groups. Here :meth:`AdaLomo.step` applies it after backward like any optimizer, and
:meth:`AdaLomo.update_parameter` applies it to one parameter, which is what
:mod:`alphaadam.optim.fused_backward` calls from a post-accumulate-grad hook so that each gradient is
freed as soon as it is produced. Both forms share the state, so a checkpoint of one resumes the other.

State per tensor: ``step`` and ``exp_avg_sq_row``/``exp_avg_sq_col`` (m + n values) or ``exp_avg_sq``
(vectors), in fp32 for bf16/fp16 parameters (the parameter's dtype otherwise). The update is computed
in that precision and copied back into the parameter.
"""

from __future__ import annotations

import math

import torch

from alphaadam.optim.base import state_dtype
from alphaadam.optim.common import KeepsStateDtypes, check_number, evaluate_closure, params_with_grad
from alphaadam.optim.sharding import refuse_dtensors


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.norm() / math.sqrt(x.numel())


def beta2_at(step: int, decay_rate: float) -> float:
    """The second-moment decay of step ``step`` (from 1): 1 - step^decay_rate, 0 at the first step."""
    return 1.0 - step**decay_rate


class AdaLomo(KeepsStateDtypes, torch.optim.Optimizer):
    """AdaLomo as a torch optimizer; see the module docstring for the rule.

    Args:
        lr: the relative step size η (the step is η · max(eps2, RMS(θ))).
        eps1: added to g² before averaging. eps2: floor of RMS(θ) in the step size.
        clip_threshold: d of the update normalisation u / max(1, RMS(u) / d).
        decay_rate: c of β2_t = 1 - t^c (negative).
        weight_decay: decoupled, scaled by the relative step α.
        clip_grad_value: clamp each gradient entry to [-v, v] first (None: no clamp).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        eps1: float = 1e-30,
        eps2: float = 1e-3,
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        weight_decay: float = 0.0,
        clip_grad_value: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            eps1=eps1,
            eps2=eps2,
            clip_threshold=clip_threshold,
            decay_rate=decay_rate,
            weight_decay=weight_decay,
            clip_grad_value=clip_grad_value,
        )
        super().__init__(params, defaults)
        every = (p for group in self.param_groups for p in group["params"])
        refuse_dtensors(every, "AdaLomo", "its factored second moment needs whole rows and columns")

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for key in ("lr", "eps1", "eps2", "weight_decay"):
            check_number(key, group[key])
        check_number("clip_threshold", group["clip_threshold"], low=1e-12)
        if not isinstance(group["decay_rate"], (int, float)) or not group["decay_rate"] < 0:
            raise ValueError(f"decay_rate={group['decay_rate']!r} must be a negative number (e.g. -0.8)")
        if group["clip_grad_value"] is not None:
            check_number("clip_grad_value", group["clip_grad_value"], low=1e-12)
        for p in group["params"]:
            if not p.is_floating_point():
                raise ValueError(f"AdaLomo needs floating-point parameters, got {p.dtype}")

    def group_of(self, param: torch.Tensor) -> dict:
        """The param group holding ``param``. The index is cached, not the group: ``load_state_dict``
        replaces the group dictionaries (and a scheduler then writes into the new ones)."""
        index = self.__dict__.setdefault("_group_index", {})
        if param not in index:
            index.update({p: i for i, g in enumerate(self.param_groups) for p in g["params"]})
        return self.param_groups[index[param]]

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group, _, p in params_with_grad(self):
            self.update_parameter(p, group=group)
        return loss

    @torch.no_grad()
    def update_parameter(
        self, p: torch.Tensor, grad_scale=1.0, group: dict | None = None, consume_grad: bool = False
    ) -> None:
        """Update ``p`` from ``p.grad`` (multiplied by ``grad_scale``, e.g. a clipping coefficient);
        ``consume_grad``: ``p.grad`` may be overwritten (it is freed next)."""
        group = group or self.group_of(p)
        state = self.state[p]
        dtype = state_dtype(p)
        shape = (p.shape[0], p.numel() // p.shape[0]) if p.dim() >= 2 else p.shape
        if not state:
            state["step"] = torch.tensor(0.0)
            if p.dim() >= 2:
                state["exp_avg_sq_row"] = torch.zeros(shape[0], dtype=dtype, device=p.device)
                state["exp_avg_sq_col"] = torch.zeros(shape[1], dtype=dtype, device=p.device)
            else:
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.contiguous_format)
        state["step"] += 1
        beta2 = beta2_at(state["step"].item(), group["decay_rate"])

        # One buffer of the parameter's size holds g, then the update (none in the fused form,
        # which hands over a gradient it is about to free): the rest are reductions.
        work = p.grad.detach().reshape(shape)
        work = work if consume_grad and work.dtype == dtype else work.to(dtype, copy=True)
        if group["clip_grad_value"] is not None:
            work.clamp_(-group["clip_grad_value"], group["clip_grad_value"])
        if not (isinstance(grad_scale, float) and grad_scale == 1.0):
            work.mul_(grad_scale)
        if p.dim() >= 2:  # row and column means of g² + eps1
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            row_mean = torch.linalg.vector_norm(work, dim=1).square_().div_(shape[1]).add_(group["eps1"])
            col_mean = torch.linalg.vector_norm(work, dim=0).square_().div_(shape[0]).add_(group["eps1"])
            row.mul_(beta2).add_(row_mean, alpha=1 - beta2)
            col.mul_(beta2).add_(col_mean, alpha=1 - beta2)
            work.mul_((row / row.mean()).rsqrt_()[:, None]).mul_(col.rsqrt()[None, :])
        else:
            v = state["exp_avg_sq"]
            v.mul_(beta2).addcmul_(work, work, value=1 - beta2).add_((1 - beta2) * group["eps1"])
            work.mul_(v.rsqrt())
        update = work.div_((rms(work) / group["clip_threshold"]).clamp(min=1.0))

        theta = p.detach().reshape(shape)
        alpha = group["lr"] * rms(theta.to(dtype)).clamp(min=group["eps2"])  # a tensor: no device sync
        if p.dtype != dtype:  # bf16/fp16: compute in fp32, round once
            theta = theta.to(dtype)
        if group["weight_decay"]:
            theta.mul_(1 - alpha * group["weight_decay"])
        theta.sub_(update.mul_(alpha))
        if p.dtype != dtype:
            p.copy_(theta.reshape(p.shape))
