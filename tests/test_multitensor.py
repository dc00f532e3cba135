"""The multi-tensor step: a fixed number of ATen ops per step whatever the number of tensors, and no
read of a device value (the step never waits for a GPU). Identities are in test_alphaadam.py and
test_alphasgd.py, whose "eager" backend is this path."""

import pytest

from alphaadam.optim.opcount import HOST_READ, build, model_like, ops_per_step

MASKED = ["alphaadam", "cadamw", "adamw_am", "adamw_sm", "alphasgd"]
SIZES = (16, 148, 600)  # GPT-2 has 148 parameter tensors


def hyper_parameters(name: str) -> dict:
    if name == "adamw_foreach":
        return dict(weight_decay=0.1)
    return dict(weight_decay=0.1, backend="eager", **(dict(momentum=0.9) if name == "alphasgd" else {}))


@pytest.mark.parametrize("name", [*MASKED, "adamw_foreach"])
def test_ops_per_step_do_not_grow_with_the_number_of_tensors(name):
    counts = [ops_per_step(name, n, **hyper_parameters(name)) for n in SIZES]
    if name == "adamw_foreach":
        assert counts[1][HOST_READ] == 2 * SIZES[1]  # torch reads each CPU step counter on the host
        for c in counts:
            c.pop(HOST_READ)
    else:
        assert counts[0][HOST_READ] == 0
    assert counts[0] == counts[1] == counts[2], [sum(c.values()) for c in counts]


@pytest.mark.parametrize("name", MASKED)
def test_step_reads_no_device_value(name):
    # Meta tensors have no values: any .item(), .tolist() or data-dependent branch on one raises.
    named = model_like(6, device="meta")
    opt = build(name, named, **hyper_parameters(name))
    for _ in range(3):
        for _, p in named:
            p.grad = p.detach().clone()
        opt.step()
    assert all(s["alpha"].device.type == "meta" for s in opt.state.values())
