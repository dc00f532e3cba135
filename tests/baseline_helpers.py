"""Tiny models with the parameter names of the paper's three model families, built in-process."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


class _Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class _MLP(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class _Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = _Attention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = _MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    """nanoGPT's module names and weight tying (lm_head is wte), at toy size."""

    def __init__(self, vocab_size=40, block_size=16, n_layer=2, n_head=4, n_embd=32):
        super().__init__()
        self.config = SimpleNamespace(
            vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd
        )
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, n_embd),
                wpe=nn.Embedding(block_size, n_embd),
                h=nn.ModuleList(_Block(n_embd, n_head) for _ in range(n_layer)),
                ln_f=nn.LayerNorm(n_embd),
            )
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def tiny_gpt2(dtype=torch.float32):
    """Hugging Face GPT-2 (``Conv1D`` weights stored (in, out)) with TinyGPT's names and sizes."""
    import transformers

    config = transformers.GPT2Config(
        vocab_size=40, n_positions=16, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).to(dtype)


def tiny_roberta(dtype=torch.float32):
    import transformers

    config = transformers.RobertaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=100,
        max_position_embeddings=40,
    )
    torch.manual_seed(0)
    return transformers.RobertaForSequenceClassification(config).to(dtype)


def tiny_llama(dtype=torch.float32, kv_heads=2):
    import transformers

    config = transformers.LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        intermediate_size=96,
        vocab_size=100,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).to(dtype)


def gradient_stream(named, step: int, dtype=None) -> dict[str, torch.Tensor]:
    """A reproducible pseudo-gradient per parameter for step ``step`` (with a slow drift)."""
    grads = {}
    for i, (name, p) in enumerate(named):
        gen = torch.Generator().manual_seed(7919 * step + i)
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        g += 0.5 * torch.sin(torch.tensor(step / 3.0 + i, dtype=torch.float64))
        grads[name] = g.to(dtype or p.dtype)
    return grads


def apply_stream(
    optimizer, named, steps: int, start: int = 0, set_grads=True
) -> list[dict[str, torch.Tensor]]:
    """Run ``steps`` steps of :func:`gradient_stream`; returns the parameters after each step."""
    history = []
    for t in range(start, start + steps):
        grads = gradient_stream(named, t)
        for name, p in named:
            if set_grads or p.grad is None:
                p.grad = grads[name].clone()
            else:
                p.grad.add_(grads[name])
        optimizer.step()
        optimizer.zero_grad()
        history.append({n: p.detach().clone() for n, p in named})
    return history
