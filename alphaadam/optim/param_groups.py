"""Named trainable parameters of a model and the weight-decay rules that split them into groups."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

# "ndim": nanoGPT's rule, decay only tensors with >= 2 dimensions (matrices and embeddings).
# "bias_and_norm": the Hugging Face / GLUE rule, no decay on biases and normalisation weights.
# "all": decay every tensor.
WEIGHT_DECAY_RULES = ("ndim", "bias_and_norm", "all")


def _is_norm_module(module: nn.Module) -> bool:
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm)
    # Model families define their own norms (LlamaRMSNorm, T5LayerNorm, ...).
    return isinstance(module, norm_types) or type(module).__name__.endswith("Norm")


def _looks_like_norm(name: str) -> bool:
    """Name-based fallback when no module is at hand (HF 'LayerNorm', nanoGPT 'ln_f', Llama 'norm')."""
    owner = name.rsplit(".", 1)[0].lower() if "." in name else ""
    last = owner.rsplit(".", 1)[-1]
    return "norm" in last or last.startswith("ln")


@dataclass(frozen=True)
class NamedParameters:
    """Trainable parameters with their names, and the model when one was given."""

    named: tuple[tuple[str, nn.Parameter], ...]
    model: nn.Module | None = None

    @classmethod
    def of(cls, source: nn.Module | Iterable[tuple[str, torch.Tensor]] | NamedParameters) -> NamedParameters:
        if isinstance(source, NamedParameters):
            return source
        if isinstance(source, nn.Module):
            # named_parameters() lists a tied weight once, under its first name.
            named, model = tuple(source.named_parameters()), source
        else:
            named, model = tuple(source), None
            for item in named:
                if not (
                    isinstance(item, tuple)
                    and len(item) == 2
                    and isinstance(item[0], str)
                    and isinstance(item[1], torch.Tensor)
                ):
                    raise ValueError(
                        "expected a model or an iterable of (name, parameter) pairs, "
                        f"e.g. model.named_parameters(); got an element {type(item).__name__}"
                    )
        named = tuple((n, p) for n, p in named if p.requires_grad)
        if not named:
            raise ValueError("no trainable parameters (all have requires_grad=False)")
        return cls(named, model)

    def norm_parameter_names(self) -> set[str]:
        if self.model is None:
            return {n for n, _ in self.named if _looks_like_norm(n)}
        names = set()
        for module_name, module in self.model.named_modules():
            if _is_norm_module(module):
                names.update(
                    f"{module_name}.{n}" if module_name else n
                    for n, _ in module.named_parameters(recurse=False)
                )
        return names

    def decays(self, rule: str) -> dict[str, bool]:
        """Whether each parameter gets weight decay under ``rule``."""
        if rule not in WEIGHT_DECAY_RULES:
            raise ValueError(f"weight_decay_rule={rule!r} is not one of {WEIGHT_DECAY_RULES}")
        if rule == "ndim":
            return {n: p.dim() >= 2 for n, p in self.named}
        if rule == "all":
            return {n: True for n, _ in self.named}
        norms = self.norm_parameter_names()
        return {n: not (n.rsplit(".", 1)[-1] == "bias" or n in norms) for n, _ in self.named}

    def weight_decay_groups(self, weight_decay: float, rule: str = "ndim", **group_options) -> list[dict]:
        """Two param groups (decayed, not decayed), each a list of (name, parameter) pairs."""
        decays = self.decays(rule)
        groups = [
            {"params": [(n, p) for n, p in self.named if decays[n]], "weight_decay": weight_decay},
            {"params": [(n, p) for n, p in self.named if not decays[n]], "weight_decay": 0.0},
        ]
        return [{**g, **group_options} for g in groups if g["params"]]
