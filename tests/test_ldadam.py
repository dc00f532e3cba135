"""LDAdam: the identities of notes/baselines.md §6, error feedback in p.grad, and the builder."""

import warnings

import pytest
import torch

from alphaadam.optim import build_optimizer
from alphaadam.optim.ldadam import LDAdam, projects_left, svd_basis
from tests.baseline_helpers import TinyGPT, apply_stream, tiny_roberta

F64 = torch.float64


def _matrix(shape, seed, spectrum=None):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(shape, generator=gen, dtype=F64)
    if spectrum is None:
        return g
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    return u @ torch.diag(torch.tensor(spectrum, dtype=F64)) @ vh


def _back(opt, p):
    state = opt.state[p]
    left = projects_left(p.shape, opt.param_groups[0]["proj_type"])
    return state["basis"] @ state["exp_avg"] if left else state["exp_avg"] @ state["basis"]


@pytest.mark.parametrize("shape", [(8, 5), (5, 8), (6, 6)])
def test_full_rank_first_moment_equals_adams(shape):
    p = torch.nn.Parameter(_matrix(shape, 0))
    opt = LDAdam([{"params": [p], "lowrank": True}], lr=1e-2, rank=min(shape), weight_decay=0.1)
    beta1 = opt.param_groups[0]["betas"][0]
    adam_m = torch.zeros(shape, dtype=F64)
    for t in range(12):
        g = _matrix(shape, 100 + t) + 0.2
        if p.grad is None:
            p.grad = g.clone()
        else:  # at full rank the error buffer stays (numerically) zero
            p.grad.copy_(g)
        opt.step()
        adam_m = beta1 * adam_m + (1 - beta1) * g
        assert torch.allclose(_back(opt, p), adam_m, rtol=0, atol=1e-12)
        assert p.grad.abs().max() < 1e-12


def test_error_buffer_after_first_step_holds_the_discarded_spectrum():
    g = _matrix((10, 7), 1)
    p = torch.nn.Parameter(torch.zeros(10, 7, dtype=F64))
    p.grad = g.clone()
    opt = LDAdam([{"params": [p], "lowrank": True}], rank=3)
    opt.step()
    singular = torch.linalg.svdvals(g)
    assert p.grad.pow(2).sum().item() == pytest.approx(singular[3:].pow(2).sum().item(), rel=1e-12)
    # and it is exactly the part of g outside the top-3 subspace
    basis = opt.state[p]["basis"]  # 10 x 7: right projection, basis 3 x 7
    assert basis.shape == (3, 7)
    assert torch.allclose(p.grad, g - g @ basis.T @ basis, atol=1e-12)


@pytest.mark.parametrize(("rho", "steps", "tolerance"), [(0.0, 15, 1e-10), (0.908, 150, 1e-5)])
def test_fixed_gradient_basis_converges_to_top_singular_subspace(rho, steps, tolerance):
    spectrum = [10.0, 7.0, 5.0, 1.0, 0.5, 0.2]
    fixed = _matrix((6, 9), 2, spectrum)  # 6 x 9: left projection
    u = torch.linalg.svd(fixed)[0][:, :3]
    target = u @ u.T
    p = torch.nn.Parameter(torch.zeros(6, 9, dtype=F64))
    opt = LDAdam([{"params": [p], "lowrank": True}], rank=3, rho=rho, error_feedback=False)
    p.grad = _matrix((6, 9), 3)  # a random first gradient: the SVD start is not the answer
    opt.step()
    distances = []
    for _ in range(steps):
        p.grad = fixed.clone()
        opt.step()
        q = opt.state[p]["basis"]
        distances.append(torch.linalg.matrix_norm(q @ q.T - target, ord=2).item())
    assert distances[0] > 1e-2  # it did start away from the answer
    assert distances[-1] < tolerance
    # (with rho > 0 the momentum remembers the first gradient, which decays like beta1^t)


def test_top_subspace_is_a_fixed_point():
    fixed = _matrix((9, 6), 12, [10.0, 7.0, 5.0, 1.0, 0.5, 0.2])  # right projection
    p = torch.nn.Parameter(torch.zeros(9, 6, dtype=F64))
    opt = LDAdam([{"params": [p], "lowrank": True}], rank=3, error_feedback=False)
    vh = torch.linalg.svd(fixed)[2][:3]
    for _ in range(10):
        p.grad = fixed.clone()
        opt.step()
        basis = opt.state[p]["basis"]
        assert torch.allclose(basis.T @ basis, vh.T @ vh, atol=1e-12)


def test_second_moment_stays_non_negative_and_state_shapes():
    params = [torch.nn.Parameter(_matrix(s, 4)) for s in [(9, 4), (4, 9), (5, 5)]]
    opt = LDAdam([{"params": params, "lowrank": True}], lr=1e-2, rank=2)
    for t in range(30):
        for i, p in enumerate(params):
            g = _matrix(p.shape, 1000 * t + i)
            p.grad = g if p.grad is None else p.grad.add_(g)
        opt.step()
        opt.zero_grad()
        for p in params:
            assert (opt.state[p]["exp_avg_sq"] >= 0).all()
    assert [tuple(opt.state[p]["exp_avg"].shape) for p in params] == [(9, 2), (2, 9), (2, 5)]
    assert [tuple(opt.state[p]["basis"].shape) for p in params] == [(2, 4), (4, 2), (5, 2)]


def test_rank_larger_than_the_projected_side_is_an_error():
    p = torch.nn.Parameter(torch.zeros(10, 4))
    with pytest.raises(ValueError, match=r"rank=5 exceeds the projected side \(4\).*'w'"):
        LDAdam([{"params": [("w", p)], "lowrank": True}], rank=5)
    with pytest.raises(ValueError, match="only matrices"):
        LDAdam([{"params": [torch.nn.Parameter(torch.zeros(4))], "lowrank": True}], rank=2)
    with pytest.raises(ValueError, match="rank=0 exceeds|rank=0 must be"):
        LDAdam([{"params": [p], "lowrank": True}], rank=0)
    with pytest.raises(ValueError, match="proj_type"):
        LDAdam([p], proj_type="both")
    with pytest.raises(ValueError, match="rho"):
        LDAdam([p], rho=1.0)


def test_zero_grad_keeps_error_buffers_only():
    lowrank = torch.nn.Parameter(_matrix((6, 4), 5))
    dense = torch.nn.Parameter(torch.ones(4, dtype=F64))
    no_ef = torch.nn.Parameter(_matrix((6, 4), 6))
    opt = LDAdam(
        [
            {"params": [lowrank], "lowrank": True},
            {"params": [dense], "lowrank": False},
            {"params": [no_ef], "lowrank": True, "error_feedback": False},
        ],
        rank=2,
    )
    for p in (lowrank, dense, no_ef):
        p.grad = torch.ones_like(p)
    opt.zero_grad()  # before any step nothing is an error buffer yet
    assert all(p.grad is None for p in (lowrank, dense, no_ef))
    for p in (lowrank, dense, no_ef):
        p.grad = _matrix(p.shape, 7) if p.dim() == 2 else torch.ones_like(p)
    opt.step()
    buffer = lowrank.grad
    opt.zero_grad()
    assert lowrank.grad is buffer and buffer.abs().sum() > 0
    assert dense.grad is None and no_ef.grad is None
    dense.grad = torch.ones_like(dense)
    opt.zero_grad(set_to_none=False)
    assert lowrank.grad is buffer and torch.equal(dense.grad, torch.zeros_like(dense))


def test_model_zero_grad_keeps_the_error_feedback():
    # The Hugging Face Trainer frees p.grad with model.zero_grad() after every step: the error stays
    # in the optimizer state and the next step adds it to the fresh gradient, bit for bit the sum
    # that optimizer.zero_grad() + backward makes.
    def run(clear):
        torch.manual_seed(0)
        model = TinyGPT().double()
        opt = build_optimizer(model, "ldadam", lr=1e-2, rank=2)
        gen = torch.Generator().manual_seed(0)
        for _ in range(6):
            idx = torch.randint(0, 40, (2, 16), generator=gen)
            model(idx, idx).backward()
            opt.step()
            (model if clear == "model" else opt).zero_grad()
        return model, opt

    kept, _ = run("optimizer")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        freed, opt = run("model")
    for (name, p), (_, q) in zip(kept.named_parameters(), freed.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    buffers = [s["error_buffer"] for s in opt.state.values() if "error_buffer" in s]
    assert len(buffers) == 8 and all(b.abs().sum() > 0 for b in buffers)


@pytest.mark.parametrize("fresh", [True, False])
def test_a_freed_error_buffer_is_added_back(fresh):
    def after_two_steps(free):
        p = torch.nn.Parameter(_matrix((6, 4), 8))
        opt = LDAdam([{"params": [p], "lowrank": True}], lr=1e-2, rank=2)
        p.grad = _matrix((6, 4), 9)
        opt.step()
        assert opt.state[p]["error_buffer"] is p.grad
        if free:
            p.grad = None
        if fresh:  # a new gradient (after a freed buffer: a new tensor, else added in place)
            g = _matrix((6, 4), 10)
            p.grad = g if p.grad is None else p.grad.add_(g)
        opt.step()
        return p

    assert torch.equal(after_two_steps(free=True), after_two_steps(free=False))


def test_gradient_accumulation_adds_to_the_error_buffer():
    p = torch.nn.Parameter(_matrix((6, 4), 8))
    opt = LDAdam([{"params": [p], "lowrank": True}], rank=2)
    p.grad = _matrix((6, 4), 9)
    opt.step()
    opt.zero_grad()
    error = p.grad.clone()
    x = torch.randn(4, dtype=F64)
    (p @ x).sum().backward()
    assert torch.allclose(p.grad, error + torch.ones(6, 1, dtype=F64) * x)


def test_builder_selects_the_reference_glue_matrices():
    model = tiny_roberta()
    opt = build_optimizer(model, "ldadam", rank=8, weight_decay=0.01, weight_decay_rule="bias_and_norm")
    lowrank = {n for g in opt.param_groups if g["lowrank"] for n in g["param_names"]}
    # the reference script: names containing query/key/value/intermediate.dense/output.dense ".weight"
    expected = {
        n
        for n, _ in model.named_parameters()
        if any(k in n for k in ("query.weight", "key.weight", "value.weight", "dense.weight"))
        and "classifier" not in n
    }
    assert lowrank == expected and len(expected) == 12
    decays = {n: g["weight_decay"] for g in opt.param_groups for n in g["param_names"]}
    assert decays["roberta.embeddings.LayerNorm.weight"] == 0.0 and decays["classifier.dense.weight"] == 0.01


def test_bf16_parameters_keep_fp32_state_and_svd_basis_helper():
    p = torch.nn.Parameter(_matrix((8, 6), 10).to(torch.bfloat16))
    opt = LDAdam([{"params": [p], "lowrank": True}], rank=2)
    for t in range(3):
        g = _matrix((8, 6), 20 + t).to(torch.bfloat16)
        p.grad = g if p.grad is None else p.grad.add_(g)
        opt.step()
    state = opt.state[p]
    assert state["exp_avg"].dtype == state["basis"].dtype == torch.float32
    assert p.grad.dtype == torch.bfloat16 and torch.isfinite(p.float()).all()
    # state survives a save/load without being cast to bf16
    opt2 = LDAdam([{"params": [p], "lowrank": True}], rank=2)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[p]["exp_avg"].dtype == torch.float32
    q = svd_basis(_matrix((5, 3), 11), 2, left=True)
    assert torch.allclose(q.T @ q, torch.eye(2, dtype=F64))


def test_error_buffers_are_gradients_not_optimizer_state():
    from alphaadam.train.measure import optimizer_state_bytes

    def state_bytes(error_feedback, free):
        model = TinyGPT()
        opt = build_optimizer(model, "ldadam", rank=2, error_feedback=error_feedback)
        apply_stream(opt, list(model.named_parameters()), 2, set_grads=False)
        if free:
            model.zero_grad()  # now the buffers live in the optimizer state alone
        return optimizer_state_bytes(opt)

    assert state_bytes(True, free=False) == state_bytes(False, free=False)
    low_rank = 2 * (96 * 32 + 32 * 32 + 128 * 32 + 32 * 128)  # TinyGPT's attention and MLP matrices
    assert state_bytes(True, free=True) == state_bytes(False, free=True) + 4 * low_rank
