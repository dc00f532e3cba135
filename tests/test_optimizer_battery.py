"""What every registered optimizer must do, run over every name in the registry.

A name added to the registry is picked up here without editing this file; ``SMALL`` only shrinks
settings that would not fit the toy model (a rank larger than its matrices) or that learn too slowly
for a 25-step test.
"""

import io
import re
from pathlib import Path

import pytest
import torch

from alphaadam.optim import available_optimizers, build_optimizer, optimizer_entry
from tests.baseline_helpers import TinyGPT, apply_stream

NAMES = available_optimizers()

SMALL = {
    "galore": dict(rank=4, update_proj_gap=3),  # projector refreshes at steps 1, 4, 7, 10
    "ldadam": dict(rank=4),
    "microadam": dict(density=0.05),
    "sgd": dict(lr=0.3),
    "alphasgd": dict(lr=0.3),
}

# torch.optim.SGD steps on sparse gradients; every other optimizer must refuse them.
TAKES_SPARSE_GRADIENTS = {"sgd"}

# bitsandbytes' 8-bit states take fp32 parameters only; every other optimizer is checked in float64.
FLOAT32_ONLY = {"adam8bit"}


def build(model, name, **hparams):
    return build_optimizer(
        model, name, **{"lr": 3e-3, "weight_decay": 0.01, **SMALL.get(name, {}), **hparams}
    )


def _batch(seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 40, (4, 16), generator=gen)


def _equal(a, b):
    return all(torch.equal(x[n], y[n]) for x, y in zip(a, b, strict=True) for n in x)


def test_every_entry_names_its_source_and_paper():
    for name in NAMES:
        entry = optimizer_entry(name)
        assert entry.source, name
        assert entry.paper or entry.source == "torch", f"{name}: which paper does it implement?"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_resumes_the_same_trajectory(name):
    """Save after 4 steps through torch.save / torch.load(weights_only=True), resume for 6 more."""
    dtype = torch.float32 if name in FLOAT32_ONLY else torch.float64

    def fresh():
        torch.manual_seed(0)
        model = TinyGPT(n_layer=1).to(dtype)
        opt = build(model, name)
        for i, group in enumerate(opt.param_groups):  # per-group settings must survive the round trip
            group["lr"] *= 1 + i
        return model, opt

    model, opt = fresh()
    named = list(model.named_parameters())
    # set_grads=False: optimizers that keep a buffer in p.grad (LDAdam) get the new gradient added
    apply_stream(opt, named, 4, set_grads=False)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    straight = apply_stream(opt, named, 6, start=4, set_grads=False)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model2, opt2 = fresh()
    for group in opt2.param_groups:
        group["lr"] = 1.0  # overwritten by load_state_dict
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    kinds = {p: {k: v.dtype for k, v in s.items() if torch.is_tensor(v)} for p, s in opt.state.items()}
    params2 = dict(model2.named_parameters())
    for pname, p in named:
        if p in opt.state:  # the loaded state keeps its dtypes (int codes, fp32 moments)
            loaded = opt2.state[params2[pname]]
            assert {k: v.dtype for k, v in loaded.items() if torch.is_tensor(v) and k in kinds[p]} == kinds[p]
    resumed = apply_stream(opt2, list(model2.named_parameters()), 6, start=4, set_grads=False)
    assert _equal(straight, resumed)


@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_drives_every_group(name):
    """A scheduler that sets lr to 0 after one step freezes the parameters (weight decay included)."""
    model = TinyGPT(n_layer=1)
    opt = build(model, name, lr=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 if step == 0 else 0.0)
    named = list(model.named_parameters())
    start = [p.detach().clone() for p in model.parameters()]
    apply_stream(opt, named, 1, set_grads=False)
    assert not all(torch.equal(a, b) for a, b in zip(start, model.parameters(), strict=True))
    schedule.step()
    assert all(g["lr"] == 0.0 for g in opt.param_groups)
    before = [p.detach().clone() for p in model.parameters()]
    apply_stream(opt, named, 2, start=1, set_grads=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_each_param_group_uses_its_own_learning_rate(name):
    model = TinyGPT(n_layer=1)
    opt = build(model, name)
    assert len(opt.param_groups) >= 2, "weight_decay_rule='ndim' gives decayed and undecayed groups"
    frozen, moving = opt.param_groups[0], opt.param_groups[1:]
    frozen["lr"] = 0.0
    before = {id(p): p.detach().clone() for p in model.parameters()}
    apply_stream(opt, list(model.named_parameters()), 2, set_grads=False)
    assert all(torch.equal(p, before[id(p)]) for p in frozen["params"])
    assert any(not torch.equal(p, before[id(p)]) for g in moving for p in g["params"])


@pytest.mark.parametrize("name", NAMES)
def test_trains_a_gpt_with_optimizer_zero_grad_only(name):
    torch.manual_seed(0)
    model = TinyGPT()
    opt = build(model, name)
    idx = _batch(0)
    losses = []
    for _ in range(25):
        loss = model(idx, idx)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


@pytest.mark.parametrize("name", NAMES)
def test_sparse_gradients_are_refused_or_used(name):
    model = TinyGPT()
    model.transformer.wte = torch.nn.Embedding(40, 32, sparse=True)
    model.lm_head = torch.nn.Linear(32, 40, bias=False)
    opt = build(model, name, weight_decay=0.0)  # torch's SGD cannot decay a sparse gradient
    idx = _batch(2)
    model(idx, idx).backward()
    if name in TAKES_SPARSE_GRADIENTS:
        before = model.transformer.wte.weight.detach().clone()
        opt.step()
        assert not torch.equal(before, model.transformer.wte.weight)
    else:
        with pytest.raises(RuntimeError, match="sparse gradients"):
            opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_bad_arguments_are_errors_naming_them(name):
    with pytest.raises(ValueError, match=f"{name!r} does not take bogus_option"):
        build(TinyGPT(), name, bogus_option=1)
    with pytest.raises(ValueError, match=r"(?i)learning rate|lr"):
        build(TinyGPT(), name, lr=-1.0)


@pytest.mark.parametrize("name", NAMES)
def test_config_file_builds_and_says_where_each_value_comes_from(name):
    from alphaadam.train.config import compose, optimizer_settings

    path = Path(__file__).resolve().parents[1] / "configs" / "optimizer" / f"{name}.yaml"
    assert path.is_file(), f"every registered optimizer needs {path}"
    for line in path.read_text().splitlines():
        # Values taken from the recipe (${...}) are marked paper/inferred in the recipe's config.
        if re.match(r"^\w+:", line) and not line.startswith("name:") and "${" not in line:
            assert re.search(r"#\s*(paper|inferred)\b", line), line
    cfg = compose("pretrain_gpt", [f"optimizer={name}"])
    assert cfg.optimizer.name == name
    registry_name, settings = optimizer_settings(cfg.optimizer)
    build_optimizer(TinyGPT(), registry_name, **settings)
