"""Every registered optimizer under the Hugging Face Trainer, on tiny GPT-2, Llama and RoBERTa models.

The Trainer takes a ready optimizer (``optimizers=(opt, None)``), steps it through accelerate,
clips gradients before ``step()`` and clears them with ``model.zero_grad()`` after it.
"""

import math

import pytest
import torch

from alphaadam.optim import available_optimizers, build_optimizer
from tests.baseline_helpers import tiny_gpt2, tiny_llama, tiny_roberta

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

# Settings an optimizer needs on these toy sizes (the smallest matrix side is 32).
TINY_SETTINGS = {"galore": dict(rank=4), "ldadam": dict(rank=4)}


def language_batches(vocab: int, n: int = 8, length: int = 12) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (length,), generator=gen)
        items.append({"input_ids": ids, "labels": ids.clone()})
    return items


def classification_batches(vocab: int, n: int = 8, length: int = 12) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [
        {"input_ids": torch.randint(3, vocab, (length,), generator=gen), "labels": torch.tensor(i % 2)}
        for i in range(n)
    ]


MODELS = {
    "gpt2": (tiny_gpt2, lambda: language_batches(40)),
    "llama": (tiny_llama, lambda: language_batches(100)),
    "roberta": (tiny_roberta, lambda: classification_batches(100)),
}


def trainer_arguments(tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        max_steps=3,
        per_device_train_batch_size=4,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    return transformers.TrainingArguments(**{**settings, **overrides})


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("optimizer", available_optimizers())
def test_every_optimizer_trains_under_the_trainer(optimizer, model_name, tmp_path):
    make_model, make_data = MODELS[model_name]
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, optimizer, lr=1e-3, **TINY_SETTINGS.get(optimizer, {}))
    trainer = transformers.Trainer(
        model=model, args=trainer_arguments(tmp_path), train_dataset=make_data(), optimizers=(opt, None)
    )
    output = trainer.train()
    assert output.global_step == 3 and math.isfinite(output.training_loss)
    after = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    moved = [n for n, p in after.items() if not torch.equal(p, before[n])]
    assert len(moved) >= 0.5 * len(before), f"only {len(moved)} of {len(before)} tensors changed"


def test_ldadam_under_the_trainer_keeps_its_error_feedback(tmp_path):
    # The Trainer frees p.grad with model.zero_grad() after each step. With one repeated batch, no
    # clipping and a constant rate, its run must match a plain loop that calls optimizer.zero_grad(),
    # where LDAdam's error feedback stays in p.grad; without error feedback the result differs.
    batch = language_batches(100, n=1)[0]
    data = [batch] * 12  # every shuffled batch of 4 is the same batch

    def trainer_run(error_feedback):
        model = tiny_llama(torch.float64)  # Llama has no dropout: the runs are deterministic
        opt = build_optimizer(model, "ldadam", lr=1e-2, rank=4, error_feedback=error_feedback)
        constant = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        args = trainer_arguments(tmp_path, max_grad_norm=0.0)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data, optimizers=(opt, constant))
        trainer.train()
        return model, opt

    model, opt = trainer_run(error_feedback=True)
    buffers = [s["error_buffer"] for s in opt.state.values() if "error_buffer" in s]
    assert len(buffers) == 14 and all(b.abs().sum() > 0 for b in buffers)  # 7 matrices x 2 layers

    plain = tiny_llama(torch.float64)
    plain_opt = build_optimizer(plain, "ldadam", lr=1e-2, rank=4)
    inputs = {k: v.expand(4, *v.shape) for k, v in batch.items()}
    for _ in range(3):
        plain(**inputs).loss.backward()
        plain_opt.step()
        plain_opt.zero_grad()
    for (n, p), (_, q) in zip(model.named_parameters(), plain.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=n)

    without, _ = trainer_run(error_feedback=False)
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(
        dict(without.named_parameters())[q_proj], dict(plain.named_parameters())[q_proj]
    )
