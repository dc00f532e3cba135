"""Adam-mini: parity with the official adam-mini 1.1.1 on Llama names, and the partition per family."""

import pytest
import torch

from alphaadam.optim import build_optimizer
from alphaadam.optim.adam_mini import AdamMini, block_count
from alphaadam.optim.families import adam_mini_blocks
from alphaadam.optim.param_groups import NamedParameters
from tests.baseline_helpers import TinyGPT, apply_stream, gradient_stream, tiny_gpt2, tiny_llama, tiny_roberta


def blocks_by_name(opt) -> dict[str, str]:
    return {n: g["block"] for g in opt.param_groups for n in g["param_names"]}


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_equals_official_adam_mini_on_llama_names(kv_heads):
    adam_mini = pytest.importorskip("adam_mini")
    model_ours = tiny_llama(torch.float64, kv_heads=kv_heads)
    model_ref = tiny_llama(torch.float64, kv_heads=kv_heads)
    model_ref.load_state_dict(model_ours.state_dict())
    hp = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    ours = build_optimizer(model_ours, "adam_mini", **hp)
    ref = adam_mini.Adam_mini(
        model_ref.named_parameters(), **hp, dim=64, n_heads=4, n_kv_heads=kv_heads, verbose=False
    )
    named_ours = list(model_ours.named_parameters())
    named_ref = list(model_ref.named_parameters())
    for t in range(8):
        grads = gradient_stream(named_ours, t)
        for (n, p), (_, q) in zip(named_ours, named_ref, strict=True):
            p.grad, q.grad = grads[n].clone(), grads[n].clone()
        ours.step()
        ref.step()
        for (n, p), (_, q) in zip(named_ours, named_ref, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-13, msg=n)


def test_llama_partition():
    blocks = adam_mini_blocks(NamedParameters.of(tiny_llama()))
    assert blocks == {
        "model.embed_tokens.weight": "row",
        **{
            f"model.layers.{i}.{k}": v
            for i in range(2)
            for k, v in {
                "self_attn.q_proj.weight": "head",
                "self_attn.k_proj.weight": "head",
                "self_attn.v_proj.weight": "row",
                "self_attn.o_proj.weight": "row",
                "mlp.gate_proj.weight": "row",
                "mlp.up_proj.weight": "row",
                "mlp.down_proj.weight": "row",
                "input_layernorm.weight": "tensor",
                "post_attention_layernorm.weight": "tensor",
            }.items()
        },
        "model.norm.weight": "tensor",
        "lm_head.weight": "row",
    }


ROBERTA_LAYER = {
    "attention.self.query.weight": "head",
    "attention.self.query.bias": "adam",
    "attention.self.key.weight": "head",
    "attention.self.key.bias": "adam",
    "attention.self.value.weight": "row",
    "attention.self.value.bias": "adam",
    "attention.output.dense.weight": "row",
    "attention.output.dense.bias": "adam",
    "attention.output.LayerNorm.weight": "tensor",
    "attention.output.LayerNorm.bias": "adam",
    "intermediate.dense.weight": "row",
    "intermediate.dense.bias": "adam",
    "output.dense.weight": "row",
    "output.dense.bias": "adam",
    "output.LayerNorm.weight": "tensor",
    "output.LayerNorm.bias": "adam",
}


def test_roberta_partition_of_every_parameter():
    model = tiny_roberta()
    expected = {
        "roberta.embeddings.word_embeddings.weight": "row",
        "roberta.embeddings.token_type_embeddings.weight": "row",
        "roberta.embeddings.position_embeddings.weight": "row",
        "roberta.embeddings.LayerNorm.weight": "tensor",
        "roberta.embeddings.LayerNorm.bias": "adam",
        **{f"roberta.encoder.layer.{i}.{k}": v for i in range(2) for k, v in ROBERTA_LAYER.items()},
        "classifier.dense.weight": "row",
        "classifier.dense.bias": "adam",
        "classifier.out_proj.weight": "row",
        "classifier.out_proj.bias": "adam",
    }
    assert adam_mini_blocks(NamedParameters.of(model)) == expected
    opt = build_optimizer(model, "adam_mini", weight_decay=0.01, weight_decay_rule="bias_and_norm")
    assert blocks_by_name(opt) == expected
    assert {g["head_dim"] for g in opt.param_groups} == {16}  # hidden 64 / 4 heads, from the config


def test_roberta_trains_where_the_official_package_crashes():
    # adam-mini 1.1.1 sends the 1-D LayerNorm weights under "embeddings"/"output" to its per-row
    # branch and fails with an IndexError; here they are one block per tensor.
    model = tiny_roberta()
    opt = build_optimizer(model, "adam_mini", lr=1e-3)
    batch = dict(input_ids=torch.randint(3, 100, (4, 12)), labels=torch.tensor([0, 1, 0, 1]))
    for _ in range(3):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    ln = model.roberta.embeddings.LayerNorm.weight
    assert opt.state[ln]["exp_avg_sq"].shape == (1,)
    query = model.roberta.encoder.layer[0].attention.self.query.weight
    assert opt.state[query]["exp_avg_sq"].shape == (4,)


def test_gpt_partition_of_every_parameter_and_fused_qkv_blocks():
    model = TinyGPT(n_layer=1, n_head=4, n_embd=32)
    layer = {
        "ln_1.weight": "tensor",
        "ln_1.bias": "adam",
        "attn.c_attn.weight": "qkv",
        "attn.c_attn.bias": "adam",
        "attn.c_proj.weight": "row",
        "attn.c_proj.bias": "adam",
        "ln_2.weight": "tensor",
        "ln_2.bias": "adam",
        "mlp.c_fc.weight": "row",
        "mlp.c_fc.bias": "adam",
        "mlp.c_proj.weight": "row",
        "mlp.c_proj.bias": "adam",
    }
    expected = {  # lm_head is tied to wte and listed once, as wte
        "transformer.wte.weight": "row",
        "transformer.wpe.weight": "row",
        **{f"transformer.h.0.{k}": v for k, v in layer.items()},
        "transformer.ln_f.weight": "tensor",
        "transformer.ln_f.bias": "adam",
    }
    opt = build_optimizer(model, "adam_mini", lr=1e-2)
    assert blocks_by_name(opt) == expected
    # the fused c_attn (96 x 32): 4 query heads + 4 key heads of 8 rows each, then 32 value rows
    c_attn = model.transformer.h[0].attn.c_attn.weight
    assert block_count("qkv", c_attn.shape, 8) == 4 + 4 + 32
    g = torch.randn_like(c_attn)
    for _, p in model.named_parameters():
        p.grad = torch.zeros_like(p)
    c_attn.grad = g.clone()
    opt.step()
    v = opt.state[c_attn]["exp_avg_sq"]
    beta2 = opt.param_groups[0]["betas"][1]
    heads = (g[:64] ** 2).reshape(8, -1).mean(dim=1)
    rows = (g[64:] ** 2).mean(dim=1)
    torch.testing.assert_close(v, (1 - beta2) * torch.cat([heads, rows]))


def conv1d_weight_names(model) -> set[str]:
    return {f"{n}.weight" for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}


def test_hf_gpt2_conv1d_weights_get_the_same_blocks_and_update_as_nanogpt():
    # Hugging Face GPT-2 stores c_attn/c_proj/c_fc as (in, out); nanoGPT's nn.Linear as (out, in).
    # With the same weights (transposed) and gradients, Adam-mini must make the same update.
    hf, nano = tiny_gpt2(torch.float64), TinyGPT(n_layer=2, n_head=4, n_embd=32).double()
    conv = conv1d_weight_names(hf)
    assert len(conv) == 8 and hf.transformer.h[0].attn.c_attn.weight.shape == (32, 96)
    hf_params, nano_params = dict(hf.named_parameters()), dict(nano.named_parameters())
    assert hf_params.keys() == nano_params.keys()
    with torch.no_grad():
        for n, p in hf_params.items():
            nano_params[n].copy_(p.T if n in conv else p)
    hp = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    opt_hf, opt_nano = build_optimizer(hf, "adam_mini", **hp), build_optimizer(nano, "adam_mini", **hp)
    assert blocks_by_name(opt_hf) == blocks_by_name(opt_nano)
    assert {n for g in opt_hf.param_groups if g["transposed"] for n in g["param_names"]} == conv
    named = list(nano_params.items())
    for t in range(6):
        grads = gradient_stream(named, t)
        for n, p in named:
            p.grad = grads[n].clone()
            hf_params[n].grad = (grads[n].T if n in conv else grads[n]).clone()
        opt_hf.step()
        opt_nano.step()
    for n, p in hf_params.items():
        torch.testing.assert_close(p.T if n in conv else p, nano_params[n], rtol=1e-13, atol=1e-13, msg=n)
        torch.testing.assert_close(
            opt_hf.state[p]["exp_avg_sq"], opt_nano.state[nano_params[n]]["exp_avg_sq"]
        )


@pytest.mark.parametrize(("third", "head"), [(0, 0), (0, 3), (1, 2)])
def test_hf_gpt2_c_attn_blocks_are_its_heads(third, head):
    # HF GPT-2 splits c_attn's output columns into [q | k | v] and each third into heads of
    # head_dim consecutive columns: a gradient on one head's columns touches that head's block only.
    model = tiny_gpt2(torch.float64)
    c_attn = model.transformer.h[1].attn.c_attn.weight  # (32, 96): 4 heads of 8 columns per third
    opt = build_optimizer(model, "adam_mini")
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    first = 32 * third + 8 * head
    c_attn.grad[:, first : first + 8] = torch.randn(32, 8, dtype=torch.float64)
    opt.step()
    v = opt.state[c_attn]["exp_avg_sq"]
    assert v.shape == (4 + 4 + 32,)  # query heads, key heads, value neurons
    block = 4 * third + head
    assert v.nonzero().flatten().tolist() == [block]
    beta2 = opt.param_groups[0]["betas"][1]
    torch.testing.assert_close(v[block], (1 - beta2) * c_attn.grad[:, first : first + 8].pow(2).mean())
    c_fc = model.transformer.h[1].mlp.c_fc.weight  # (32, 128): one block per output neuron (column)
    assert opt.state[c_fc]["exp_avg_sq"].shape == (128,)


def test_hf_gpt2_layout_without_the_model_is_refused():
    named = list(tiny_gpt2().named_parameters())
    with pytest.raises(ValueError, match="Conv1D; pass the model itself"):
        build_optimizer(named, "adam_mini", n_heads=4)


def test_compiled_and_ddp_prefixes_match_the_same_rules():
    model = TinyGPT(n_layer=1)
    plain = adam_mini_blocks(NamedParameters.of(model))
    for prefix in ("_orig_mod.", "module.", "module._orig_mod."):
        named = [(prefix + n, p) for n, p in model.named_parameters()]
        assert adam_mini_blocks(NamedParameters.of(named), "gpt") == {prefix + n: k for n, k in plain.items()}


def test_head_count_comes_from_config_or_arguments():
    model = TinyGPT(n_layer=1, n_head=4, n_embd=32)
    named = list(model.named_parameters())  # names only: no config to read
    with pytest.raises(ValueError, match="number of attention heads"):
        build_optimizer(named, "adam_mini")
    opt = build_optimizer(named, "adam_mini", n_heads=2)
    assert {g["head_dim"] for g in opt.param_groups} == {16}
    assert {g["head_dim"] for g in build_optimizer(model, "adam_mini").param_groups} == {8}
    with pytest.raises(ValueError, match="does not fit"):
        build_optimizer(model, "adam_mini", head_dim=5)
    with pytest.raises(ValueError, match="n_heads=3"):
        build_optimizer(named, "adam_mini", n_heads=3)


def test_unknown_names_are_an_error_not_a_default():
    model = TinyGPT(n_layer=1)
    model.extra = torch.nn.Parameter(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="no partition rule.*extra"):
        build_optimizer(model, "adam_mini")
    with pytest.raises(ValueError, match="cannot tell the model family"):
        build_optimizer(torch.nn.Linear(3, 3), "adam_mini")
    with pytest.raises(ValueError, match="block=None is not one of"):
        AdamMini([torch.nn.Parameter(torch.zeros(3))])


def test_bf16_parameters_keep_fp32_state():
    model = TinyGPT(n_layer=1).to(torch.bfloat16)
    opt = build_optimizer(model, "adam_mini")
    apply_stream(opt, list(model.named_parameters()), 2)
    state = opt.state[model.transformer.h[0].attn.c_attn.weight]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32


def test_argument_checks_name_the_argument():
    p = torch.nn.Parameter(torch.zeros(4, 4))
    for kwargs, word in [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(1.0, 0.9)), r"betas\[0\]"),
        (dict(eps=-1.0), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(block="head"), "head_dim"),
        (dict(block="qkv", head_dim=3), "does not fit"),
        (
            dict(block="qkv", head_dim=4, transposed=True),
            r"does not fit the \(4, 4\) .* stored as \(in, out\)",
        ),
        (dict(block="tensor", transposed=True), "needs a block kind made of rows"),
        (dict(transposed=1), "transposed=1 must be True or False"),
    ]:
        with pytest.raises(ValueError, match=word):
            AdamMini([p], **{"block": "row", **kwargs})
    with pytest.raises(ValueError, match="needs a matrix"):
        AdamMini([torch.nn.Parameter(torch.zeros(4))], block="row")
