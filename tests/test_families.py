"""Model-family detection and the name rules shared by GaLore, LDAdam and Adam-mini."""

import pytest
import torch

from alphaadam.optim.families import FAMILIES, attention_head_dim, detect_family, lowrank_targets
from alphaadam.optim.param_groups import NamedParameters
from tests.baseline_helpers import TinyGPT, tiny_llama, tiny_roberta


def test_detection_from_config_names_and_wrappers():
    assert detect_family(NamedParameters.of(tiny_roberta())).name == "roberta"
    assert detect_family(NamedParameters.of(tiny_llama())).name == "llama"
    gpt = TinyGPT(n_layer=1)
    assert detect_family(NamedParameters.of(gpt)).name == "gpt"
    compiled_names = [("_orig_mod." + n, p) for n, p in gpt.named_parameters()]
    assert detect_family(NamedParameters.of(compiled_names)).name == "gpt"

    class Wrapper(torch.nn.Module):  # like DDP: the model under .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    wrapped = NamedParameters.of(Wrapper(tiny_roberta()))
    assert detect_family(wrapped).name == "roberta"
    assert attention_head_dim(wrapped) == 16
    assert len(lowrank_targets(wrapped)) == 12
    with pytest.raises(ValueError, match="family='bert' is not one of"):
        detect_family(wrapped, "bert")


def test_head_dim_sources():
    assert attention_head_dim(NamedParameters.of(tiny_llama())) == 16  # config.head_dim
    assert attention_head_dim(NamedParameters.of(tiny_llama()), n_heads=8) == 8
    assert attention_head_dim(NamedParameters.of(TinyGPT(n_head=4, n_embd=32))) == 8  # n_embd / n_head
    with pytest.raises(ValueError, match="head_dim=0"):
        attention_head_dim(NamedParameters.of(TinyGPT()), head_dim=0)


def test_every_family_has_both_tables():
    for family in FAMILIES.values():
        assert family.lowrank and family.blocks
        assert all(kind in ("adam", "head", "qkv", "row", "tensor") for _, kind in family.blocks)
