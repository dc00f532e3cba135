"""trainer.fused_backward_update in both recipes: AdaLomo updating inside backward, and the stops."""

import pytest

import recipes.finetune_glue as glue_recipe
import recipes.pretrain_gpt as gpt_recipe
from alphaadam.errors import ConfigError
from tests.glue_helpers import glue_config
from tests.pretrain_helpers import gpt_config
from tests.run_helpers import records

pytestmark = pytest.mark.usefixtures("quick_recipe_runs")


def test_gpt_recipe_fused_run_follows_the_step_form(tmp_path, data_dir):
    common = ("optimizer=adalomo", "optimizer.lr=0.05", "trainer.max_steps=12")
    step_cfg = gpt_config(tmp_path / "step", data_dir, *common)
    fused_cfg = gpt_config(tmp_path / "fused", data_dir, *common, "trainer.fused_backward_update=true")
    step_result, fused_result = gpt_recipe.train(step_cfg), gpt_recipe.train(fused_cfg)
    assert fused_result["status"] == "completed"
    a, b = records(step_cfg), records(fused_cfg)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    # The global norm is summed in another order; in float32 AdaLomo turns that rounding into full-size
    # steps of the (near-)zero gradients, e.g. attention key biases: agreement to ~1e-4, not bitwise.
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "grad_norm"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=2e-3)
    assert fused_result["metrics"]["final"]["val_loss"] < 8.0  # from ~ln(5184) = 8.55
    assert step_result["memory"]["optimizer_state_bytes"] == fused_result["memory"]["optimizer_state_bytes"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("optimizer=adamw",), "AdamW cannot update inside backward"),
        (("optimizer=adalomo", "trainer.tokens_per_step=256"), "gradient accumulation"),
        (("optimizer=adalomo", "trainer.dtype=float16"), "float16"),
    ],
)
def test_gpt_recipe_stops_on_settings_that_cannot_fuse(tmp_path, data_dir, overrides, message):
    cfg = gpt_config(tmp_path, data_dir, *overrides, "trainer.fused_backward_update=true")
    with pytest.raises(ConfigError, match=message):
        gpt_recipe.train(cfg)


def test_glue_recipe_fine_tunes_with_the_fused_update(tmp_path, tiny_roberta, glue_data):
    cfg = glue_config(
        tmp_path, tiny_roberta, glue_data, "task=glue/rte", "optimizer=adalomo", "trainer.epochs=1"
    )
    cfg.trainer.fused_backward_update = True
    result = glue_recipe.train(cfg)
    assert result["status"] == "completed" and result["identity"]["optimizer"] == "adalomo"
    assert all(r["grad_norm"] > 0 for r in records(cfg) if "grad_norm" in r)
    cfg.trainer.micro_batch_size = 3
    with pytest.raises(ConfigError, match="gradient accumulation"):
        glue_recipe.train(cfg)
