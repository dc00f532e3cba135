"""Every registered optimizer on FSDP2 (``fully_shard``) parameters: two CPU processes on gloo.

One spawned pair runs every check (a process start costs seconds on a busy machine). Gradients are
injected, identical on every layout: the sharded optimizer must match the same optimizer on the
whole tensors, because FSDP's reduce-scatter rounding would otherwise flip mask signs near zero.
"""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from alphaadam.errors import UserError
from alphaadam.optim import available_optimizers, build_optimizer, native
from alphaadam.optim.sharding import local
from alphaadam.train import sharded_checkpoint
from alphaadam.train.distributed import Distributed
from tests import gloo_helpers

WORLD = 2
STEPS = 6
# Element-wise masked optimizers: sharded == unsharded (whole-tensor sums all-reduced once a step).
EXACT = ["alphaadam", "cadamw", "adamw_am", "adamw_sm", "alphasgd", "adamw", "sgd"]
# Run on each rank's shard as on a plain tensor (their blocks are shard-local).
SHARD_LOCAL = ["microadam", "adam8bit"]
# Projected matrices gathered and stepped whole: tests/test_fsdp2_gathered.py
WHOLE_MATRIX = ["galore", "ldadam"]
REFUSED = ["adam_mini", "adalomo", "adapprox", "sinkgd", "swan"]
OPTIONS = {"alphasgd": dict(momentum=0.9), "sgd": dict(momentum=0.9), "microadam": dict(density=0.1)}
EMPTY_ON_RANK0_STEP = 3  # rank 0's rows of "wide.weight" get a zero gradient: only its shard's mask is empty


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wide = torch.nn.Linear(16, 1001)  # 1001 rows: shards of 501 and 500
        self.narrow = torch.nn.Linear(16, 1)  # one row: rank 1's shard is empty
        self.table = torch.nn.Parameter(torch.randn(7, 4))

    def forward(self, x):
        return self.wide(x).tanh().mean() + self.narrow(x).square().mean() + self.table.square().mean()


def gradient(step: int, index: int, shape, rank_rows: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 * step + index)
    g = torch.randn(shape, generator=gen, dtype=torch.float64) + 0.2 * torch.sin(torch.tensor(step / 2.0))
    if step == EMPTY_ON_RANK0_STEP and index == 0:
        g[:rank_rows] = 0.0
    return g


def build(name: str, model):
    return build_optimizer(model, name, lr=1e-2, weight_decay=0.1, **OPTIONS.get(name, {}))


def train(opt, params, steps, start=0, sharded=True):
    """Inject the gradient stream; returns the first tensor's mask density after each step."""
    densities = []
    for t in range(start, start + steps):
        for i, p in enumerate(params):
            g = gradient(t, i, p.shape, -(-p.shape[0] // WORLD))
            if sharded:
                from torch.distributed.tensor import distribute_tensor

                g = distribute_tensor(g, p.device_mesh, p.placements)
            p.grad = g
        opt.step()
        state = opt.state.get(params[0], {})
        densities.append(state["mask_density"].item() if "mask_density" in state else None)
    return densities


def counting_all_reduces(fn, *args):
    """``fn(*args)`` and the number of ``dist.all_reduce`` calls it made."""
    original, calls = dist.all_reduce, []

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    dist.all_reduce = counted
    try:
        return fn(*args), len(calls)
    finally:
        dist.all_reduce = original


def full(p):
    return p.full_tensor() if hasattr(p, "full_tensor") else p


def same_state(a: dict, b: dict) -> bool:
    """Two parameters' optimizer states hold the same keys and bitwise equal values."""
    if a.keys() != b.keys():
        return False
    return all(torch.equal(local(v), local(b[k])) if torch.is_tensor(v) else v == b[k] for k, v in a.items())


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = gloo_helpers.init(rank, port, WORLD)
    report = {}

    def sharded_model(shard_mesh=None):
        torch.manual_seed(0)
        model = Net().double()
        reference = Net().double()
        reference.load_state_dict(model.state_dict())
        fully_shard(model.wide, mesh=shard_mesh)  # None: its own default mesh; still one all-reduce a step
        fully_shard(model.narrow, mesh=shard_mesh or mesh)
        fully_shard(model, mesh=shard_mesh or mesh)
        return model, reference

    def checkpoint_round_trip(model, opt, name, path, make):
        """Save through torch.distributed.checkpoint, load into a fresh ``make()`` and optimizer."""
        dcp.save(
            {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)},
            checkpoint_id=path,
        )
        fresh, _ = make()
        fresh_opt = build(name, fresh)
        state = {"model": get_model_state_dict(fresh), "optim": get_optimizer_state_dict(fresh, fresh_opt)}
        dcp.load(state, checkpoint_id=path)
        set_model_state_dict(fresh, state["model"])
        set_optimizer_state_dict(fresh, fresh_opt, state["optim"])
        return fresh, fresh_opt

    try:
        for name in available_optimizers():
            if name in WHOLE_MATRIX:
                continue
            model, reference = sharded_model()
            try:
                opt = build(name, model)
            except RuntimeError as err:
                report[name] = {"refused": str(err)}
                continue
            params = list(model.parameters())
            rows = [torch.nn.Parameter(p.to_local().detach().clone()) for p in params]
            densities, calls = counting_all_reduces(train, opt, params, STEPS)
            entry = {
                "all_reduces_per_step": calls / STEPS,
                "native_ok": native.applies(params[0]),
            }
            if name in SHARD_LOCAL:  # the same optimizer on plain copies of this rank's rows
                ref_opt = build(name, torch.nn.ParameterList(rows))
                for t in range(STEPS):
                    for i, (p, q) in enumerate(zip(params, rows, strict=True)):
                        g = gradient(t, i, p.shape, -(-p.shape[0] // WORLD))
                        q.grad = torch.distributed.tensor.distribute_tensor(g, mesh, p.placements).to_local()
                    ref_opt.step()
                entry["param_diff"] = max(
                    (p.to_local() - q).abs().max().item()
                    for p, q in zip(params, rows, strict=True)
                    if q.numel()
                )
            else:
                ref_params = list(reference.parameters())
                ref_opt = build(name, reference)
                ref_densities = train(ref_opt, ref_params, STEPS, sharded=False)
                entry["param_diff"] = max(
                    (full(p) - q).abs().max().item() for p, q in zip(params, ref_params, strict=True)
                )
                if "alpha" in opt.state[params[0]]:
                    alpha = torch.stack([opt.state[p]["alpha"].double() for p in params])
                    ref_alpha = torch.stack([ref_opt.state[q]["alpha"].double() for q in ref_params])
                    gathered = [torch.zeros_like(alpha) for _ in range(WORLD)]
                    dist.all_gather(gathered, alpha)
                    entry["alpha_diff"] = (alpha - ref_alpha).abs().max().item()
                    entry["alpha_same_on_ranks"] = all(torch.equal(gathered[0], a) for a in gathered)
                    entry["empty_step_density"] = (
                        densities[EMPTY_ON_RANK0_STEP],
                        ref_densities[EMPTY_ON_RANK0_STEP],
                    )
                    entry["state_is_dtensor"] = all(
                        type(v).__name__ == "DTensor"
                        for p in params
                        for k, v in opt.state[p].items()
                        if k in ("exp_avg", "exp_avg_sq", "momentum_buffer")
                    )
            report[name] = entry

        # A maximum cannot be summed over shards: alpha_norm=inf is refused on sharded parameters.
        model, _ = sharded_model()
        opt = build_optimizer(model, "alphaadam", alpha_norm=float("inf"))
        try:
            train(opt, list(model.parameters()), 1)
        except ValueError as err:
            report["inf_norm"] = str(err)

        # DDP: each rank its own batch, gradients averaged before step(); the replicas must stay equal.
        for name in [*EXACT, *SHARD_LOCAL]:
            torch.manual_seed(0)
            model = torch.nn.parallel.DistributedDataParallel(Net().double())
            opt = build(name, model.module)
            for t in range(3):
                x = torch.randn(
                    8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(10 * t + rank)
                )
                model(x).backward()
                opt.step()
                opt.zero_grad()
            flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            copies = [torch.zeros_like(flat) for _ in range(WORLD)]
            dist.all_gather(copies, flat)
            report[f"ddp_{name}"] = max((c - flat).abs().max().item() for c in copies)

        # Optimizer state through torch.distributed.checkpoint: save at step 3, load into a fresh
        # model and optimizer, continue; the result must equal the uninterrupted run. MicroAdam's and
        # Adam-8bit's state follows each rank's shard, not the parameter's shape: one row per rank.
        for name in ["alphaadam", "alphasgd", *SHARD_LOCAL]:
            model, _ = sharded_model()
            opt = build(name, model)
            params = list(model.parameters())
            train(opt, params, 3)
            fresh, fresh_opt = checkpoint_round_trip(
                model, opt, name, f"{out_dir}/{name}_ckpt", sharded_model
            )
            train(opt, params, 3, start=3)
            fresh_params = list(fresh.parameters())
            train(fresh_opt, fresh_params, 3, start=3)
            report[f"dcp_{name}"] = max(
                (full(p) - full(q)).abs().max().item() for p, q in zip(params, fresh_params, strict=True)
            )
            report[f"dcp_state_{name}"] = all(
                same_state(opt.state[p], fresh_opt.state[q])
                for p, q in zip(params, fresh_params, strict=True)
            )

        # The training loop's sharded checkpoint takes them too, and refuses to resume their per-rank
        # state on another number of processes (here a pretended third).
        processes = Distributed(torch.device("cpu"), rank, rank, WORLD)
        for name in SHARD_LOCAL:
            model, _ = sharded_model()
            opt = build(name, model)
            train(opt, list(model.parameters()), 2)
            path = Path(out_dir) / f"{name}_run" / "checkpoint.dcp"
            sharded_checkpoint.save(path, model, opt, {"step": 2}, processes)
            fresh, _ = sharded_model()
            fresh_opt = build(name, fresh)
            step = sharded_checkpoint.load(path, fresh, fresh_opt, processes)["step"]
            train(opt, list(model.parameters()), 2, start=2)
            train(fresh_opt, list(fresh.parameters()), 2, start=step)
            report[f"run_checkpoint_{name}"] = all(
                torch.equal(local(p), local(q)) and same_state(opt.state[p], fresh_opt.state[q])
                for p, q in zip(model.parameters(), fresh.parameters(), strict=True)
            )
            try:
                sharded_checkpoint.load(path, fresh, fresh_opt, replace(processes, world_size=WORLD + 1))
                report[f"run_checkpoint_processes_{name}"] = "loaded"
            except UserError as err:
                report[f"run_checkpoint_processes_{name}"] = str(err)

        # Per-rank state saved on two ranks does not load where the parameters are split otherwise.
        saved = opt.state_dict()  # Adam-8bit's, after the round trip above
        whole, _ = sharded_model(init_device_mesh("cpu", (WORLD, 1), mesh_dim_names=("dp", "shard"))["shard"])
        whole_opt = build("adam8bit", whole)
        try:
            whole_opt.load_state_dict(saved)
            report["reshard"] = "loaded"
        except RuntimeError as err:
            report["reshard"] = str(err)
        state = {"model": get_model_state_dict(whole), "optim": get_optimizer_state_dict(whole, whole_opt)}
        try:  # DCP's own size check: the rows' first dimension is the number of ranks
            dcp.load(state, checkpoint_id=f"{out_dir}/adam8bit_ckpt")
            report["reshard_dcp"] = "loaded"
        except dcp.CheckpointException as err:  # the planners' errors, by rank
            report["reshard_dcp"] = str(err)
        # Adam-8bit with a 511 x 16 matrix: shards of 4096 elements (8-bit) and 4080 (fp32, under 4096).
        straddling = torch.nn.Linear(16, 511, bias=False).double()
        fully_shard(straddling, mesh=mesh)
        try:
            build("adam8bit", straddling)
            report["straddling"] = "built"
        except ValueError as err:
            report["straddling"] = str(err)
        dist.barrier()
    finally:
        gloo_helpers.finish(rank, out_dir, report)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return gloo_helpers.spawn(_worker, tmp_path_factory.mktemp("fsdp2"), WORLD)


def test_every_registered_optimizer_is_covered():
    assert sorted(EXACT + SHARD_LOCAL + WHOLE_MATRIX + REFUSED) == available_optimizers()


@pytest.mark.parametrize("name", EXACT)
def test_sharded_equals_unsharded_with_identical_gradients(reports, name):
    for report in reports:
        entry = report[name]
        assert entry["param_diff"] <= 1e-6, entry
        if "alpha_diff" in entry:
            assert entry["alpha_diff"] <= 1e-6 and entry["alpha_same_on_ranks"], entry
            assert entry["state_is_dtensor"]
            assert entry["all_reduces_per_step"] == 1.0  # all tensors' sums in one collective
        assert not entry["native_ok"]  # the C kernels read raw memory: never a DTensor


def test_a_mask_empty_on_one_shard_only_is_not_empty(reports):
    # At that step rank 0's rows of the first tensor have a zero gradient, so its shard's mask is
    # empty; the whole tensor's is not (the trajectories above equal the unsharded ones throughout).
    for report in reports:
        sharded, unsharded = report["alphaadam"]["empty_step_density"]
        assert sharded == pytest.approx(unsharded, rel=1e-12)
        assert 0 < sharded < 0.6


@pytest.mark.parametrize("name", SHARD_LOCAL)
def test_shard_local_optimizers_equal_themselves_on_the_local_rows(reports, name):
    for report in reports:
        assert report[name]["param_diff"] == 0.0, report[name]


@pytest.mark.parametrize("name", REFUSED)
def test_optimizers_needing_whole_matrices_refuse_in_one_line(reports, name):
    message = reports[0][name]["refused"]
    assert "FSDP2" in message and "use " in message and "\n" not in message


@pytest.mark.parametrize("name", ["alphaadam", "alphasgd", *SHARD_LOCAL])
def test_optimizer_state_round_trips_through_dcp(reports, name):
    assert all(report[f"dcp_{name}"] == 0.0 and report[f"dcp_state_{name}"] for report in reports)


@pytest.mark.parametrize("name", SHARD_LOCAL)
def test_run_checkpoints_resume_per_rank_state_on_as_many_processes(reports, name):
    for report in reports:
        assert report[f"run_checkpoint_{name}"] is True
        message = report[f"run_checkpoint_processes_{name}"]
        assert "written by 2 processes and this run has 3" in message and "\n" not in message, message


def test_per_rank_state_refuses_another_number_of_ranks(reports):
    for report in reports:
        message = report["reshard"]
        assert "saved on 2 FSDP2 ranks and is loaded on 1" in message and "\n" not in message, message
        assert "Size mismatch between saved torch.Size([2, " in report["reshard_dcp"]


def test_shards_on_both_sides_of_min_8bit_size_are_refused_when_built(reports):
    for report in reports:
        message = report["straddling"]
        assert "hold 4080 to 4096 elements" in message, message
        assert "min_8bit_size=4096" in message and "\n" not in message


def test_infinite_norm_order_is_refused_on_shards(reports):
    assert "alpha_norm=inf" in reports[0]["inf_norm"] and "FSDP2" in reports[0]["inf_norm"]


@pytest.mark.parametrize("name", EXACT + SHARD_LOCAL)
def test_ddp_replicas_stay_identical(reports, name):
    assert all(report[f"ddp_{name}"] == 0.0 for report in reports)
