"""Building optimizers by name: names, hyper-parameter checks, weight-decay groups, presets."""

import pytest
import torch
from torch import nn

from alphaadam.optim import AlphaAdam, CAdamW, available_optimizers, build_optimizer
from alphaadam.optim.param_groups import NamedParameters


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 4)
        self.proj = nn.Linear(4, 4)
        self.LayerNorm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2, bias=False)


def group_names(opt):
    return [(g["weight_decay"], g["param_names"]) for g in opt.param_groups]


def test_core_names_are_registered():
    assert {"adamw", "alphaadam", "cadamw", "alphasgd", "sgd", "adamw_sm", "adamw_am"} <= set(
        available_optimizers()
    )


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'.*alphaadam"):
        build_optimizer(Block(), "adamx")


def test_unknown_hyperparameter_lists_accepted_ones():
    with pytest.raises(ValueError, match="does not take betaz.*betas"):
        build_optimizer(Block(), "alphaadam", betaz=(0.9, 0.9))


def test_presets_fix_their_options():
    opt = build_optimizer(Block(), "adamw_sm", lr=1e-3)
    assert isinstance(opt, AlphaAdam)
    assert opt.defaults["mask"] == "sync" and opt.defaults["compensation"] == "cautious_mean"
    assert build_optimizer(Block(), "adamw_am").defaults["mask"] == "async"
    with pytest.raises(ValueError, match="does not take mask"):
        build_optimizer(Block(), "adamw_sm", mask="async")
    assert isinstance(build_optimizer(Block(), "cadamw", normalization="nnz"), CAdamW)


def test_ndim_rule_decays_matrices_only():
    opt = build_optimizer(Block(), "alphaadam", weight_decay=0.1)
    assert group_names(opt) == [
        (0.1, ["embed.weight", "proj.weight", "head.weight"]),
        (0.0, ["proj.bias", "LayerNorm.weight", "LayerNorm.bias"]),
    ]


def test_glue_rule_spares_biases_and_norms_by_module_type():
    model = Block()
    model.scale = nn.Parameter(torch.ones(4))  # a 1-D weight that is not a norm: decayed
    opt = build_optimizer(model, "adamw", weight_decay=0.01, weight_decay_rule="bias_and_norm")
    assert group_names(opt) == [
        (0.01, ["scale", "embed.weight", "proj.weight", "head.weight"]),
        (0.0, ["proj.bias", "LayerNorm.weight", "LayerNorm.bias"]),
    ]


def test_glue_rule_from_names_alone():
    named = list(Block().named_parameters())
    decays = NamedParameters.of(named).decays("bias_and_norm")
    assert decays == {
        "embed.weight": True,
        "proj.weight": True,
        "proj.bias": False,
        "LayerNorm.weight": False,
        "LayerNorm.bias": False,
        "head.weight": True,
    }
    with pytest.raises(ValueError, match="weight_decay_rule"):
        NamedParameters.of(named).decays("some")


def test_frozen_parameters_are_left_out_and_tied_weights_counted_once():
    model = Block()
    model.head.weight = model.embed.weight = nn.Parameter(torch.randn(4, 4))
    model.proj.requires_grad_(False)
    names = [n for _, ns in group_names(build_optimizer(model, "alphaadam")) for n in ns]
    assert names == ["embed.weight", "LayerNorm.weight", "LayerNorm.bias"]


def test_named_parameters_are_accepted_and_bad_items_refused():
    model = Block()
    assert build_optimizer(model.named_parameters(), "sgd", lr=0.1).param_groups[0]["param_names"]
    with pytest.raises(ValueError, match="named_parameters"):
        build_optimizer(model.parameters(), "alphaadam")
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model.requires_grad_(False), "alphaadam")


def test_adamw_uses_torch_fused_kernel_on_cpu():
    opt = build_optimizer(Block(), "adamw", lr=1e-3)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
