"""The nanoGPT-style GPT: preset sizes (paper Table 5), causality, tying, initialisation."""

import math

import pytest
import torch
import yaml

from alphaadam.models.gpt import GPT, PRESETS, GPTConfig
from alphaadam.paths import CONFIG_DIR


def preset_config(name: str) -> GPTConfig:
    arch = {k: v for k, v in PRESETS[name].items() if k not in ("lr", "micro_batch_size")}
    return GPTConfig(**arch)


def expected_params(c: GPTConfig) -> int:
    per_layer = 12 * c.n_embd**2 + 2 * c.n_embd  # qkv + proj + mlp (no biases) + two LayerNorm weights
    return c.vocab_size * c.n_embd + c.block_size * c.n_embd + c.n_layer * per_layer + c.n_embd


@pytest.mark.parametrize(
    "name, size_m, lr, batch",
    [("gpt2_125m", 125, 6e-4, 12), ("gpt2_355m", 355, 3e-4, 6), ("gpt2_770m", 770, 2e-4, 4)],
)
def test_presets_match_table5_and_their_parameter_counts(name, size_m, lr, batch):
    config = preset_config(name)
    with torch.device("meta"):
        model = GPT(config)
    assert model.num_params() == expected_params(config)
    # The paper's sizes are nominal GPT-2 sizes; ours are within 1.5 % of them.
    assert abs(model.num_params() / 1e6 - size_m) / size_m < 0.015
    assert (PRESETS[name]["lr"], PRESETS[name]["micro_batch_size"]) == (lr, batch)
    assert (config.block_size, config.vocab_size) == (1024, 50304)


def test_model_yaml_files_mirror_the_presets():
    for name, preset in PRESETS.items():
        node = yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text())
        assert node["name"] == name
        assert {k: node[k] for k in preset} == preset
        assert (node["block_size"], node["vocab_size"], node["dropout"], node["bias"]) == (
            1024,
            50304,
            0.0,
            False,
        )


def test_attention_is_causal_and_embeddings_are_tied():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64)).eval()
    assert model.lm_head.weight is model.transformer.wte.weight
    names = [n for n, _ in model.named_parameters()]
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names
    idx = torch.randint(0, 64, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 64
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_gpt2_initialisation_and_loss_at_start():
    torch.manual_seed(0)
    config = GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=32, vocab_size=512)
    model = GPT(config)
    params = dict(model.named_parameters())
    assert abs(params["transformer.h.0.mlp.c_fc.weight"].std().item() - 0.02) < 0.002
    residual = 0.02 / math.sqrt(2 * config.n_layer)
    assert abs(params["transformer.h.0.mlp.c_proj.weight"].std().item() - residual) < 0.1 * residual
    idx, targets = torch.randint(0, 512, (2, 4, 32))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(512)) < 0.1  # near-uniform predictions at initialisation
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=100, n_head=3)


def test_flops_per_token_follows_the_palm_formula():
    with torch.device("meta"):
        model = GPT(preset_config("gpt2_125m"))
    n = model.num_params(non_embedding=True)
    assert model.flops_per_token() == 6 * n + 12 * 12 * 768 * 1024
