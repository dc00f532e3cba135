"""GaLore through galore-torch: target matrices per family, rank checks, checkpoints."""

import pytest
import torch

from alphaadam.optim import build_optimizer
from alphaadam.optim.families import lowrank_targets
from alphaadam.optim.param_groups import NamedParameters
from tests.baseline_helpers import TinyGPT, apply_stream, tiny_llama, tiny_roberta

galore_torch = pytest.importorskip("galore_torch")


def lowrank_names(opt) -> set[str]:
    return {n for g in opt.param_groups if "rank" in g for n in g["param_names"]}


def test_roberta_targets_are_the_galore_glue_matrices():
    model = tiny_roberta()
    opt = build_optimizer(model, "galore", rank=8, update_proj_gap=500, scale=2.0)
    per_layer = [
        "attention.self.query.weight",
        "attention.self.key.weight",
        "attention.self.value.weight",
        "attention.output.dense.weight",
        "intermediate.dense.weight",
        "output.dense.weight",
    ]
    assert lowrank_names(opt) == {f"roberta.encoder.layer.{i}.{k}" for i in range(2) for k in per_layer}
    group = next(g for g in opt.param_groups if "rank" in g)
    assert (group["rank"], group["update_proj_gap"], group["scale"], group["proj_type"]) == (
        8,
        500,
        2.0,
        "std",
    )
    assert isinstance(opt, galore_torch.GaLoreAdamW)


def test_gpt_and_llama_targets():
    gpt = NamedParameters.of(TinyGPT(n_layer=2))
    assert lowrank_targets(gpt) == {
        f"transformer.h.{i}.{k}.weight"
        for i in range(2)
        for k in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    llama = NamedParameters.of(tiny_llama())
    assert lowrank_targets(llama) == {
        f"model.layers.{i}.{k}.weight"
        for i in range(2)
        for k in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    }
    assert lowrank_targets(llama, targets=[r"mlp\.down_proj\.weight$"]) == {
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
    }
    with pytest.raises(ValueError, match="only matrices"):
        lowrank_targets(llama, targets=["norm"])


def test_rank_larger_than_the_smaller_side_is_an_error():
    model = TinyGPT(n_embd=32)
    with pytest.raises(ValueError, match=r"rank=33 exceeds the smaller side \(32\).*c_attn"):
        build_optimizer(model, "galore", rank=33)
    build_optimizer(model, "galore", rank=32)
    with pytest.raises(ValueError, match="proj_type"):
        build_optimizer(model, "galore", rank=4, proj_type="diagonal")
    with pytest.raises(ValueError, match="update_proj_gap"):
        build_optimizer(model, "galore", rank=4, update_proj_gap=0)


def test_builder_equals_the_package_with_hand_made_groups():
    """The builder adds nothing to the algorithm: same groups by hand give the same trajectory."""
    model = TinyGPT(n_layer=1).double()
    twin = TinyGPT(n_layer=1).double()
    twin.load_state_dict(model.state_dict())
    hp = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1)
    ours = build_optimizer(model, "galore", rank=4, update_proj_gap=3, scale=0.25, **hp)
    targets = lowrank_targets(NamedParameters.of(twin))
    named = list(twin.named_parameters())
    lowrank = [p for n, p in named if n in targets]
    decayed = [p for n, p in named if n not in targets and p.dim() >= 2]
    rest = [p for n, p in named if n not in targets and p.dim() < 2]
    ref = galore_torch.GaLoreAdamW(
        [
            {"params": lowrank, "rank": 4, "update_proj_gap": 3, "scale": 0.25, "proj_type": "std"},
            {"params": decayed},
            {"params": rest, "weight_decay": 0.0},
        ],
        no_deprecation_warning=True,
        **hp,
    )
    a = apply_stream(ours, list(model.named_parameters()), 7)
    b = apply_stream(ref, named, 7)
    assert all(torch.equal(x[n], y[n]) for x, y in zip(a, b, strict=True) for n in x)
