"""Slow, readable reference implementations of AlphaAdam and AlphaSGD, for the tests.

Each step follows docs/algorithm.md line by line, one tensor at a time, with no fusion, no scratch buffers
and no shortcuts, so that the fast code in :mod:`alphaadam.optim.alphaadam` and
:mod:`alphaadam.optim.alphasgd` can be checked against it in float64.
"""

from __future__ import annotations

import torch


def _mask(reference: torch.Tensor, grad: torch.Tensor, kind: str, strict: bool) -> torch.Tensor:
    if kind == "none":
        return torch.ones_like(grad)
    agree = reference * grad > 0 if strict else reference * grad >= 0
    return agree.to(grad.dtype)


def _compensation(u: torch.Tensor, mask: torch.Tensor, group: dict) -> float:
    kind = group["compensation"]
    if kind == "norm_ratio":
        p = group["alpha_norm"]
        masked = torch.linalg.vector_norm(mask * u, ord=p)
        # A mask that keeps only zero directions (possible with ">=") has nothing to rescale.
        alpha = (torch.linalg.vector_norm(u, ord=p) / masked).item() if masked > 0 else 1.0
    elif kind == "cautious_mean":
        alpha = 1.0 / max(mask.mean().item(), 1e-3)
    elif kind == "cautious_nnz":
        alpha = mask.numel() / (mask.sum().item() + 1)
    else:
        alpha = 1.0
    if group["alpha_max"] is not None:
        alpha = min(alpha, group["alpha_max"])
    return alpha


def _masked_step(p: torch.Tensor, u: torch.Tensor, mask: torch.Tensor, group: dict, state: dict) -> None:
    """Steps 5-7 of docs/algorithm.md: empty-mask rule, compensation, masked update."""
    density = mask.mean().item()
    if mask.sum() == 0:
        alpha = 1.0
        if group["empty_mask"] == "full":
            mask = torch.ones_like(mask)
    else:
        alpha = _compensation(u, mask, group)
    p.add_(-group["lr"] * alpha * mask * u)
    state["alpha"], state["mask_density"] = alpha, density


_MASK_DEFAULTS = dict(
    mask="async", compensation="norm_ratio", alpha_norm=2, alpha_max=None, mask_strict=True, empty_mask="full"
)


class ReferenceAlphaAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **mask_options):
        super().__init__(
            params,
            dict(
                lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **{**_MASK_DEFAULTS, **mask_options}
            ),
        )

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                # 1. decoupled weight decay, unmasked
                p.mul_(1 - group["lr"] * group["weight_decay"])
                # 2. the mask: async from the momentum before this step (sync: after, below)
                previous_m = m.clone()
                # 3. moments
                m.mul_(beta1).add_((1 - beta1) * g)
                v.mul_(beta2).add_((1 - beta2) * g * g)
                # 4. bias-corrected Adam direction, torch.optim.AdamW form
                u = (m / (1 - beta1**t)) / (v.sqrt() / (1 - beta2**t) ** 0.5 + group["eps"])
                reference = previous_m if group["mask"] == "async" else m
                mask = _mask(reference, g, group["mask"], group["mask_strict"])
                _masked_step(p, u, mask, group, state)


class ReferenceAlphaSGD(torch.optim.Optimizer):
    def __init__(
        self, params, lr=1e-3, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, **mask_options
    ):
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                nesterov=nesterov,
                weight_decay=weight_decay,
                **{**_MASK_DEFAULTS, **mask_options},
            ),
        )

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                d_p = p.grad + group["weight_decay"] * p  # torch.optim.SGD: coupled weight decay
                previous = state.get("momentum_buffer", torch.zeros_like(p))
                if momentum == 0:
                    u = buf = d_p
                else:
                    buf = (
                        d_p.clone()
                        if "momentum_buffer" not in state
                        else momentum * previous + (1 - group["dampening"]) * d_p
                    )
                    state["momentum_buffer"] = buf
                    u = d_p + momentum * buf if group["nesterov"] else buf
                reference = previous if group["mask"] == "async" else buf
                mask = _mask(reference, d_p, group["mask"], group["mask_strict"])
                _masked_step(p, u, mask, group, state)
