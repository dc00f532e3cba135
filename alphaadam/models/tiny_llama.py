"""A tiny random Llama and a tokenizer trained in-process on the run's own text: the GSM8K recipe's
model for machines without the hub (``model=tiny_llama``). Nothing is downloaded."""

from __future__ import annotations

import torch


def build(
    texts: list[str],
    vocab_size: int,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    mlp: int,
    seed: int,
):
    """``(model, tokenizer)``: a byte-level BPE of ``vocab_size`` tokens learnt from ``texts`` and a
    ``LlamaForCausalLM`` of that vocabulary, initialised from ``seed``; padding is EOS, as for Llama-2."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    tokenizer = LlamaTokenizer().train_new_from_iterator(texts, vocab_size=vocab_size)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.add_bos_token = True  # as Llama-2's tokenizer does (training a new one turns it off)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config), tokenizer
