"""Optimizers: AlphaAdam and its mask framework, baselines, and a registry to build them by name."""

from alphaadam.optim import catalog as _catalog  # noqa: F401  (fills the registry)
from alphaadam.optim.adalomo import AdaLomo
from alphaadam.optim.adam_mini import AdamMini
from alphaadam.optim.adapprox import Adapprox
from alphaadam.optim.alphaadam import AlphaAdam, CAdamW
from alphaadam.optim.alphasgd import AlphaSGD
from alphaadam.optim.base import MaskStat
from alphaadam.optim.ldadam import LDAdam
from alphaadam.optim.microadam import MicroAdam
from alphaadam.optim.param_groups import WEIGHT_DECAY_RULES, NamedParameters
from alphaadam.optim.registry import available_optimizers, build_optimizer, optimizer_entry
from alphaadam.optim.sinkgd import SinkGD
from alphaadam.optim.swan import SWAN

__all__ = [
    "AdaLomo",
    "AdamMini",
    "Adapprox",
    "AlphaAdam",
    "AlphaSGD",
    "CAdamW",
    "LDAdam",
    "MaskStat",
    "MicroAdam",
    "NamedParameters",
    "SWAN",
    "SinkGD",
    "WEIGHT_DECAY_RULES",
    "available_optimizers",
    "build_optimizer",
    "optimizer_entry",
]
