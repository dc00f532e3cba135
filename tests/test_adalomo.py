"""AdaLomo: the authors' package, its identities, and the update fused into backward."""

import copy
import io
import math

import pytest
import torch
from torch import nn

from alphaadam.optim import AdaLomo, build_optimizer
from alphaadam.optim.adalomo import beta2_at
from alphaadam.optim.fused_backward import FusedBackwardUpdate
from tests.baseline_helpers import TinyGPT, tiny_llama, tiny_roberta


def mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).to(dtype)


def batches(steps, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(32, 8, generator=gen, dtype=dtype), torch.randn(32, 4, generator=gen, dtype=dtype))
        for _ in range(steps)
    ]


def loss_of(model, batch):
    x, y = batch
    if isinstance(model, TinyGPT):
        return model(x, y)
    return (model(x) - y).square().mean()


@pytest.mark.parametrize("clip", [None, 0.05])
def test_equals_the_authors_lomo_optim_package(monkeypatch, clip):
    """lomo-optim 0.1.1 allocates its state with .cuda(); on a CPU that is made a no-op."""
    import lomo_optim  # a test dependency (pyproject.toml)

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    theirs_model, ours_model = mlp(), mlp()
    theirs = lomo_optim.AdaLomo(theirs_model, lr=1e-2, weight_decay=0.1, clip_grad_norm=clip)
    ours = AdaLomo(ours_model.parameters(), lr=1e-2, weight_decay=0.1)
    fused = FusedBackwardUpdate(ours, max_norm=clip)
    for batch in batches(6):
        if clip:
            theirs.grad_norm(loss_of(theirs_model, batch))
        theirs.fused_backward(loss_of(theirs_model, batch), lr=1e-2)
        fused.backward(loss_of(ours_model, batch))
    for a, b in zip(theirs_model.parameters(), ours_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert not torch.equal(next(mlp().parameters()), next(ours_model.parameters()))


def train_both_forms(model, batches_, max_norm):
    """(step-form model, fused-form model) after training copies of ``model`` on ``batches_``."""
    step_model, fused_model = model, copy.deepcopy(model)
    step_opt = build_optimizer(step_model, "adalomo", lr=1e-2, weight_decay=0.1)
    fused = FusedBackwardUpdate(build_optimizer(fused_model, "adalomo", lr=1e-2, weight_decay=0.1), max_norm)
    for batch in batches_:
        loss_of(step_model, batch).backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in step_model.parameters()])
        if max_norm:
            torch.nn.utils.clip_grads_with_norm_(step_model.parameters(), max_norm, norm)
        step_opt.step()
        step_opt.zero_grad()
        torch.testing.assert_close(fused.backward(loss_of(fused_model, batch)), norm, rtol=1e-10, atol=0)
    return step_model, fused_model


def test_fused_form_equals_step_form_on_tied_weights():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    tokens = [torch.randint(0, 40, (4, 16), generator=gen) for _ in range(8)]
    step_model, fused_model = train_both_forms(TinyGPT().double(), [(t, t) for t in tokens], 0.0)
    for a, b in zip(step_model.parameters(), fused_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_fused_form_with_two_pass_clipping_equals_step_form_after_clipping():
    step_model, fused_model = train_both_forms(mlp(dtype=torch.float64), batches(8, torch.float64), 0.05)
    for a, b in zip(step_model.parameters(), fused_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)  # the norms are summed in another order


def test_fused_backward_holds_at_most_one_gradient_at_a_time():
    model = TinyGPT()
    opt = build_optimizer(model, "adalomo", lr=1e-2)
    alive = []
    update = opt.update_parameter

    def counting(p, grad_scale=1.0, consume_grad=False):
        alive.append(sum(q.grad is not None for q in model.parameters()))
        update(p, grad_scale, consume_grad=consume_grad)

    opt.update_parameter = counting
    fused = FusedBackwardUpdate(opt, max_norm=1.0)
    idx = torch.randint(0, 40, (4, 16))
    before = [p.detach().clone() for p in model.parameters()]
    fused.backward(model(idx, idx))
    assert len(alive) == len(before) and max(alive) == 1
    assert all(p.grad is None for p in model.parameters())
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    fused.remove()
    model(idx, idx).backward()  # hooks gone: gradients stay for step()
    assert all(p.grad is not None for p in model.parameters())


def test_beta2_schedule():
    assert beta2_at(1, -0.8) == 0.0
    assert beta2_at(10, -0.8) == pytest.approx(1 - 10**-0.8)
    assert [beta2_at(t, -0.8) for t in (2, 5, 100)] == sorted(beta2_at(t, -0.8) for t in (2, 5, 100))


def factored_after_one_step(g: torch.Tensor) -> torch.Tensor:
    """v̂ = outer(r / mean(r), c) from AdaLomo's state after a first step (β2 = 0) on gradient g."""
    theta = nn.Parameter(torch.zeros_like(g))
    theta.grad = g.clone()
    opt = AdaLomo([theta], eps1=0.0)
    opt.step()
    row, col = opt.state[theta]["exp_avg_sq_row"], opt.state[theta]["exp_avg_sq_col"]
    return torch.outer(row / row.mean(), col)


def test_factored_second_moment_reconstructs_rank_one_squares_and_keeps_marginals():
    gen = torch.Generator().manual_seed(0)
    g = torch.outer(torch.randn(7, generator=gen).double(), torch.randn(5, generator=gen).double())
    torch.testing.assert_close(factored_after_one_step(g), g.square(), rtol=1e-12, atol=0)
    anything = torch.rand(6, 9, generator=gen, dtype=torch.float64)
    vhat = factored_after_one_step(anything.sqrt())
    torch.testing.assert_close(vhat.sum(dim=1), anything.sum(dim=1), rtol=1e-12, atol=0)
    torch.testing.assert_close(vhat.sum(dim=0), anything.sum(dim=0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("scale", [1.0, 1e-3, 250.0])
def test_first_step_on_a_rank_one_gradient_is_a_signed_relative_step(scale):
    gen = torch.Generator().manual_seed(1)
    theta = nn.Parameter(torch.randn(6, 4, generator=gen, dtype=torch.float64))
    tiny = nn.Parameter(torch.full((3, 2), 1e-5, dtype=torch.float64))  # RMS below eps2
    u, v = (
        torch.randn(6, generator=gen, dtype=torch.float64),
        torch.randn(4, generator=gen, dtype=torch.float64),
    )
    start, start_tiny = theta.detach().clone(), tiny.detach().clone()
    theta.grad = scale * torch.outer(u, v)  # loss scaling leaves the first step unchanged
    tiny.grad = scale * torch.outer(u[:3], v[:2])
    AdaLomo([theta, tiny], lr=0.01, eps1=0.0).step()
    rms = start.norm() / math.sqrt(start.numel())
    torch.testing.assert_close(
        theta.detach(), start - 0.01 * rms * torch.outer(u, v).sign(), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(tiny.detach(), start_tiny - 0.01 * 1e-3 * torch.outer(u[:3], v[:2]).sign())


def test_update_rms_is_capped_and_vectors_get_their_own_second_moment():
    gen = torch.Generator().manual_seed(2)
    bias = nn.Parameter(torch.ones(5, dtype=torch.float64))
    bias.grad = torch.randn(5, generator=gen, dtype=torch.float64)
    opt = AdaLomo([bias], lr=0.1, eps1=0.0)
    opt.step()
    torch.testing.assert_close(bias.detach(), 1 - 0.1 * bias.grad.sign())  # g / sqrt(g^2) = sign(g)
    assert set(opt.state[bias]) == {"step", "exp_avg_sq"}
    matrix = nn.Parameter(torch.ones(3, 4, 2, dtype=torch.float64))  # factored as 3 x 8
    matrix.grad = torch.randn(3, 4, 2, generator=gen, dtype=torch.float64)
    opt = AdaLomo([matrix], lr=0.1, clip_threshold=0.5)
    opt.step()
    assert opt.state[matrix]["exp_avg_sq_row"].shape == (3,) and opt.state[matrix][
        "exp_avg_sq_col"
    ].shape == (8,)
    step = 1 - matrix.detach()
    assert (step.norm() / math.sqrt(step.numel())).item() <= 0.1 * 0.5 + 1e-12


def test_checkpoint_of_the_step_form_resumes_in_the_fused_form():
    def fresh():
        model = mlp(dtype=torch.float64)
        return model, AdaLomo(model.parameters(), lr=1e-2, weight_decay=0.1)

    data = batches(7, torch.float64)
    straight_model, straight = fresh()
    for batch in data:
        loss_of(straight_model, batch).backward()
        straight.step()
        straight.zero_grad()

    model, opt = fresh()
    for batch in data[:3]:
        loss_of(model, batch).backward()
        opt.step()
        opt.zero_grad()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed_model, resumed = fresh()
    resumed_model.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["opt"])
    fused = FusedBackwardUpdate(resumed)
    for batch in data[3:]:
        fused.backward(loss_of(resumed_model, batch))
    for a, b in zip(straight_model.parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_bad_settings_are_errors_naming_them():
    with pytest.raises(ValueError, match="decay_rate"):
        build_optimizer(mlp(), "adalomo", decay_rate=0.8)
    with pytest.raises(ValueError, match="clip_threshold"):
        build_optimizer(mlp(), "adalomo", clip_threshold=0.0)
    with pytest.raises(ValueError, match="update_parameter.*adalomo"):
        FusedBackwardUpdate(build_optimizer(mlp(), "adamw"))
    with pytest.raises(ValueError, match="max_norm"):
        FusedBackwardUpdate(build_optimizer(mlp(), "adalomo"), max_norm=-1.0)


@pytest.mark.parametrize("make", [tiny_roberta, tiny_llama])
def test_fused_form_steps_every_model_family(make):
    model = make()
    fused = FusedBackwardUpdate(build_optimizer(model, "adalomo", lr=1e-2, weight_decay=0.01), max_norm=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, labels=ids if make is tiny_llama else torch.tensor([0, 1]))
    assert fused.backward(out.loss) > 0
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)]
    assert all(p.grad is None for p in model.parameters()) and sum(changed) > len(changed) // 2
