"""LDAdam and GaLore on FSDP2 (``fully_shard``) parameters: each projected matrix is gathered, stepped
whole on every rank and its local rows kept (alphaadam/optim/gathered.py). Two CPU processes on gloo.

One spawned pair runs every check. Gradients are injected, identical on every layout, so the sharded
optimizer must match the same optimizer on whole tensors after every step; a short real
forward/backward run checks that FSDP2's gradient accumulation feeds LDAdam's error buffer.
"""

import functools

import pytest
import torch
import torch.distributed as dist

from alphaadam.optim import build_optimizer
from tests import gloo_helpers

WORLD = 2
STEPS = 6
SAVE_AT = 3  # the DCP checkpoint is taken after this many steps
NAMES = ["ldadam", "galore"]
# rank 4; GaLore refreshes its projector every 2 steps (steps 1, 3, 5), LDAdam its basis every step
OPTIONS = {"ldadam": dict(rank=4), "galore": dict(rank=4, update_proj_gap=2)}
TARGETS = [r"wide\.weight", r"flat\.weight"]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.flat = torch.nn.Linear(40, 24)  # 24 x 40: projected from the left by both (moments r x 40)
        self.wide = torch.nn.Linear(24, 1001)  # 1001 x 24: shards of 501 and 500 rows, right projection

    def forward(self, x):
        return self.wide(self.flat(x).tanh()).square().mean()


def gradient(step: int, index: int, shape) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 * step + index)
    return torch.randn(shape, generator=gen) + 0.2 * torch.sin(torch.tensor(step / 2.0))


def build(name: str, model):
    return build_optimizer(model, name, lr=1e-2, weight_decay=0.1, targets=TARGETS, **OPTIONS[name])


def inject(opt, params, step: int) -> None:
    """One step on injected gradients, added to ``p.grad`` as a backward pass would (LDAdam's
    ``zero_grad`` keeps its error buffer there)."""
    opt.zero_grad()
    for i, p in enumerate(params):
        g = gradient(step, i, p.shape)
        if hasattr(p, "device_mesh"):
            from torch.distributed.tensor import distribute_tensor

            g = distribute_tensor(g, p.device_mesh, p.placements)
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)
    opt.step()


def full(p):
    return p.full_tensor() if hasattr(p, "full_tensor") else p


def max_diff(params, others) -> float:
    return max((full(p) - full(q)).abs().max().item() for p, q in zip(params, others, strict=True))


def flat_state(opt) -> list[torch.Tensor]:
    """Every tensor of ``opt.state_dict()``'s state, whole, in a fixed order."""
    out = []

    def walk(value):
        if isinstance(value, dict):
            for key in sorted(value):
                walk(value[key])
        elif isinstance(value, torch.Tensor):
            out.append(full(value).double().reshape(-1))

    walk(opt.state_dict()["state"])
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    from torch.distributed.fsdp import fully_shard

    mesh = gloo_helpers.init(rank, port, WORLD)
    report = {}

    def sharded_model():
        torch.manual_seed(0)
        model = Net()
        reference = Net()
        reference.load_state_dict(model.state_dict())
        fully_shard(model.wide, mesh=mesh)
        fully_shard(model.flat, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model, reference

    def fresh_pair(name):
        model, _ = sharded_model()
        return model, build(name, model)

    try:
        for name in NAMES:
            model, reference = sharded_model()
            opt, ref_opt = build(name, model), build(name, reference)
            params, ref_params = list(model.parameters()), list(reference.parameters())
            diffs = []
            for t in range(STEPS):
                if t == SAVE_AT:  # save, load into a fresh model and optimizer, continue both
                    fresh, fresh_opt = gloo_helpers.dcp_round_trip(
                        model, opt, f"{out_dir}/{name}_ckpt", functools.partial(fresh_pair, name)
                    )
                    fresh_params = list(fresh.parameters())
                if t >= SAVE_AT:
                    inject(fresh_opt, fresh_params, t)
                inject(opt, params, t)
                inject(ref_opt, ref_params, t)
                diffs.append(max_diff(params, ref_params))
            mine, theirs = flat_state(opt), flat_state(ref_opt)
            replicated = torch.cat(mine)
            copies = [torch.zeros_like(replicated) for _ in range(WORLD)]
            dist.all_gather(copies, replicated)
            buffers = [opt.state[p].get("error_buffer") for p in params[0::2]]  # the two weights
            report[name] = {
                "class": type(opt).__name__,
                "param_diff_per_step": diffs,
                "state_diff": max_diff(mine, theirs),
                "state_tensors": len(mine),
                "state_same_on_ranks": all(torch.equal(c, copies[0]) for c in copies),
                "error_buffer_is_sharded_grad": [
                    b is p.grad and type(b).__name__ == "DTensor"
                    for b, p in zip(buffers, params[0::2], strict=True)
                ],
                "dcp_diff": max_diff(params, fresh_params),
            }

            # A real forward/backward (the same batch on both ranks, so FSDP2's averaged gradient is
            # the batch's): FSDP2 accumulates into the kept error buffer as the plain backward does;
            # with model.zero_grad() (gradients freed) the step adds the buffer to the fresh ones.
            model, reference = sharded_model()
            freed, _ = sharded_model()
            runs = [
                (model, build(name, model)),
                (reference, build(name, reference)),
                (freed, build(name, freed)),
            ]
            for t in range(3):
                x = torch.randn(8, 40, generator=torch.Generator().manual_seed(t))
                for net, o in runs:
                    (net if net is freed else o).zero_grad()
                    net(x).backward()
                    o.step()
            report[f"backward_{name}"] = max_diff(model.parameters(), reference.parameters())
            report[f"freed_{name}"] = max_diff(freed.parameters(), reference.parameters())
        dist.barrier()
    finally:
        gloo_helpers.finish(rank, out_dir, report)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return gloo_helpers.spawn(_worker, tmp_path_factory.mktemp("fsdp2_gathered"), WORLD)


@pytest.mark.parametrize("name", NAMES)
def test_sharded_equals_unsharded_after_every_step(reports, name):
    for report in reports:
        diffs = report[name]["param_diff_per_step"]
        assert len(diffs) == STEPS and max(diffs) <= 1e-6, diffs


@pytest.mark.parametrize("name", NAMES)
def test_state_equals_unsharded_and_is_the_same_on_every_rank(reports, name):
    for report in reports:
        entry = report[name]
        assert entry["state_tensors"] > 0 and entry["state_diff"] <= 1e-6, entry
        assert entry["state_same_on_ranks"], entry


def test_ldadam_error_buffer_stays_the_sharded_gradient(reports):
    for report in reports:
        assert report["ldadam"]["error_buffer_is_sharded_grad"] == [True, True]


def test_galore_runs_the_package_step_on_whole_matrices(reports):
    assert reports[0]["galore"]["class"] == "ShardedGaLoreAdamW"


@pytest.mark.parametrize("name", NAMES)
def test_optimizer_state_round_trips_through_dcp(reports, name):
    assert all(report[name]["dcp_diff"] == 0.0 for report in reports)


@pytest.mark.parametrize("name", NAMES)
def test_real_backward_matches_unsharded(reports, name):
    for report in reports:
        assert report[f"backward_{name}"] <= 1e-6 and report[f"freed_{name}"] <= 1e-6, report
