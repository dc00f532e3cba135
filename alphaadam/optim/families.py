"""Explicit, per-model-family rules that pick parameters by name.

Two baselines need to know what a parameter *is*, not just its shape:

* GaLore and LDAdam project the 2-D weights of attention and MLP (``low-rank targets``) and train
  everything else (embeddings, norms, biases, classifier and LM heads) with plain AdamW, as in
  their papers' GLUE scripts.
* Adam-mini gives one second-moment value per *block*, and the block depends on the role of the
  tensor (one per head for query and key, one per output row for embeddings, value, attention
  output, MLP and LM head, one per tensor for norms, one per coordinate for biases).

The rules are regular expressions over parameter names, one table per family, matched with
``re.search`` after an optional prefix (``_orig_mod.`` from ``torch.compile``, ``module.`` from DDP):

=========  ==================================================  =========================================
family     names (examples)                                    where they come from
=========  ==================================================  =========================================
gpt        ``transformer.h.N.attn.c_attn.weight`` (fused QKV)  nanoGPT's ``model.py`` and Hugging Face
           ``transformer.h.N.mlp.c_fc.weight``, ``wte``,       ``GPT2LMHeadModel`` (``Conv1D`` weights
           ``wpe``, ``ln_1``, ``ln_2``, ``ln_f``               stored (in, out)); ``lm_head`` is tied
                                                               to ``wte`` and then listed once, as wte
roberta    ``roberta.encoder.layer.N.attention.self.query``,   Hugging Face ``RobertaModel`` and
           ``attention.output.dense``, ``intermediate.dense``, ``RobertaForSequenceClassification``
           ``output.dense``, ``embeddings.*``, ``LayerNorm``,  (BERT uses the same names)
           ``classifier.dense``, ``classifier.out_proj``
llama      ``model.layers.N.self_attn.q_proj``,                Hugging Face ``LlamaForCausalLM``
           ``mlp.gate_proj``, ``embed_tokens``, ``norm``,
           ``lm_head``
=========  ==================================================  =========================================

Every parameter of a supported model must match exactly one Adam-mini rule; an unknown name is an
error rather than a silent default, so a renamed module cannot quietly change the algorithm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from alphaadam.optim.param_groups import NamedParameters

# Adam-mini block kinds, from finest to coarsest.
#   "adam":   one v per coordinate (biases; Adam-mini 1.1.1 does the same)
#   "head":   one v per attention head (rows of one head of a query or key projection)
#   "qkv":    nanoGPT's fused c_attn: query and key rows per head, value rows per row
#   "row":    one v per output row (a token of an embedding, a neuron of a linear layer)
#   "tensor": one v for the whole tensor (norm weights)
BLOCK_KINDS = ("adam", "head", "qkv", "row", "tensor")


@dataclass(frozen=True)
class Family:
    name: str
    detect: str  # a name pattern whose presence identifies the family
    lowrank: tuple[str, ...]  # GaLore / LDAdam targets: 2-D weights of attention and MLP
    blocks: tuple[tuple[str, str], ...]  # Adam-mini: (pattern, block kind); the first match wins
    model_types: tuple[str, ...] = ()  # Hugging Face config.model_type values of this family


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="gpt",
            detect=r"transformer\.h\.\d+\.attn\.c_attn\.weight$",
            lowrank=(
                r"transformer\.h\.\d+\.attn\.c_attn\.weight$",
                r"transformer\.h\.\d+\.attn\.c_proj\.weight$",
                r"transformer\.h\.\d+\.mlp\.c_fc\.weight$",
                r"transformer\.h\.\d+\.mlp\.c_proj\.weight$",
            ),
            blocks=(
                (r"bias$", "adam"),
                (r"transformer\.(wte|wpe)\.weight$", "row"),
                (r"lm_head\.weight$", "row"),  # only listed when not tied to wte
                (r"transformer\.h\.\d+\.attn\.c_attn\.weight$", "qkv"),
                (r"transformer\.h\.\d+\.attn\.c_proj\.weight$", "row"),
                (r"transformer\.h\.\d+\.mlp\.c_(fc|proj)\.weight$", "row"),
                (r"transformer\.(h\.\d+\.ln_[12]|ln_f)\.weight$", "tensor"),
            ),
            model_types=("gpt2",),
        ),
        Family(
            name="roberta",
            detect=r"encoder\.layer\.\d+\.attention\.self\.query\.weight$",
            lowrank=(
                r"encoder\.layer\.\d+\.attention\.self\.(query|key|value)\.weight$",
                r"encoder\.layer\.\d+\.attention\.output\.dense\.weight$",
                r"encoder\.layer\.\d+\.intermediate\.dense\.weight$",
                r"encoder\.layer\.\d+\.output\.dense\.weight$",
            ),
            blocks=(
                (r"bias$", "adam"),
                (r"embeddings\.(word|position|token_type)_embeddings\.weight$", "row"),
                (r"LayerNorm\.weight$", "tensor"),
                (r"encoder\.layer\.\d+\.attention\.self\.(query|key)\.weight$", "head"),
                (r"encoder\.layer\.\d+\.attention\.self\.value\.weight$", "row"),
                (r"encoder\.layer\.\d+\.attention\.output\.dense\.weight$", "row"),
                (r"encoder\.layer\.\d+\.intermediate\.dense\.weight$", "row"),
                (r"encoder\.layer\.\d+\.output\.dense\.weight$", "row"),
                (r"pooler\.dense\.weight$", "row"),
                (r"classifier\.(dense|out_proj)\.weight$", "row"),
            ),
            model_types=("roberta", "bert", "xlm-roberta"),
        ),
        Family(
            name="llama",
            detect=r"layers\.\d+\.self_attn\.q_proj\.weight$",
            lowrank=(
                r"layers\.\d+\.self_attn\.(q|k|v|o)_proj\.weight$",
                r"layers\.\d+\.mlp\.(gate|up|down)_proj\.weight$",
            ),
            blocks=(
                (r"bias$", "adam"),
                (r"embed_tokens\.weight$", "row"),
                (r"layers\.\d+\.self_attn\.(q|k)_proj\.weight$", "head"),
                (r"layers\.\d+\.self_attn\.(v|o)_proj\.weight$", "row"),
                (r"layers\.\d+\.mlp\.(gate|up|down)_proj\.weight$", "row"),
                (r"(layers\.\d+\.(input|post_attention)_layernorm|norm)\.weight$", "tensor"),
                (r"lm_head\.weight$", "row"),
            ),
            model_types=("llama",),
        ),
    )
}


def _matches(pattern: str, name: str) -> bool:
    # Patterns are anchored at a name boundary: "transformer.h.0..." or "_orig_mod.transformer.h.0...".
    return re.search(r"(?:^|\.)(?:" + pattern + ")", name) is not None


def unwrap(model: nn.Module | None) -> nn.Module | None:
    """The model inside DDP/FSDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while model is not None:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def detect_family(params: NamedParameters, family: str | None = None) -> Family:
    """The family named by ``family``, else the one the model's config or parameter names show."""
    if family is not None:
        if family not in FAMILIES:
            raise ValueError(f"family={family!r} is not one of {tuple(FAMILIES)}")
        return FAMILIES[family]
    model = unwrap(params.model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for f in FAMILIES.values():
        if model_type in f.model_types:
            return f
    names = [n for n, _ in params.named]
    for f in FAMILIES.values():
        if any(_matches(f.detect, n) for n in names):
            return f
    raise ValueError(
        "cannot tell the model family from its config or parameter names "
        f"(first names: {', '.join(names[:3])}); pass family= one of {tuple(FAMILIES)}, "
        "or targets= (GaLore/LDAdam) with your own name patterns"
    )


def lowrank_targets(
    params: NamedParameters, family: str | None = None, targets: list[str] | tuple[str, ...] | None = None
) -> set[str]:
    """Names of the matrices GaLore and LDAdam project: attention and MLP weights of the family.

    ``targets`` (regular expressions, matched at a name boundary) replaces the family's table.
    Only 2-D tensors can be targets; a pattern that selects another shape is an error.
    """
    patterns = tuple(targets) if targets is not None else detect_family(params, family).lowrank
    chosen = {n for n, _ in params.named if any(_matches(pat, n) for pat in patterns)}
    if not chosen:
        raise ValueError(f"no parameter matches the low-rank target patterns {patterns}")
    for n, p in params.named:
        if n in chosen and p.dim() != 2:
            raise ValueError(
                f"low-rank target {n!r} has shape {tuple(p.shape)}; only matrices can be projected"
            )
    return chosen


def adam_mini_blocks(params: NamedParameters, family: str | None = None) -> dict[str, str]:
    """The Adam-mini block kind of every parameter (see :data:`BLOCK_KINDS`)."""
    fam = detect_family(params, family)
    kinds, unknown = {}, []
    for n, p in params.named:
        kind = next((k for pat, k in fam.blocks if _matches(pat, n)), None)
        if kind is None:
            unknown.append(n)
        elif kind not in ("adam", "tensor") and p.dim() != 2:
            raise ValueError(f"Adam-mini rule {kind!r} needs a matrix, but {n!r} has shape {tuple(p.shape)}")
        else:
            kinds[n] = kind
    if unknown:
        raise ValueError(
            f"Adam-mini has no partition rule for {len(unknown)} parameter(s) of a {fam.name!r} model: "
            f"{', '.join(unknown[:8])}; extend FAMILIES[{fam.name!r}].blocks in alphaadam/optim/families.py"
        )
    return kinds


def stored_transposed(params: NamedParameters) -> set[str]:
    """Names of the matrices stored as (in, out): weights of Hugging Face ``Conv1D`` modules (GPT-2).

    Only the model's modules can tell (a square weight looks the same either way), so without a
    model the set is empty.
    """
    if params.model is None:
        return set()
    names = {n for n, _ in params.named}
    found = set()
    for module_name, module in params.model.named_modules():
        # transformers.pytorch_utils.Conv1D, matched by name so that transformers stays optional here
        if type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), nn.Parameter):
            name = f"{module_name}.weight" if module_name else "weight"
            if name in names:
                found.add(name)
    return found


def attention_head_dim(
    params: NamedParameters,
    n_heads: int | None = None,
    head_dim: int | None = None,
    hidden_size: int | None = None,
) -> int:
    """Rows per attention head of a query/key projection, from the arguments or the model config.

    ``head_dim`` wins; else the config's ``head_dim`` (Llama) unless ``n_heads`` is given; else
    hidden / heads, with heads from ``n_heads`` or the config (``num_attention_heads``, nanoGPT's
    ``n_head``) and hidden from the config (``hidden_size``, ``n_embd``) or ``hidden_size`` (the
    caller's fallback, e.g. the input width of the query matrix).
    """
    if head_dim is not None:
        if not isinstance(head_dim, int) or head_dim <= 0:
            raise ValueError(f"head_dim={head_dim!r} must be a positive integer")
        return head_dim
    model = unwrap(params.model)
    sources = [getattr(model, "config", None), model]
    hidden = heads = None
    for src in sources:
        if src is None:
            continue
        if n_heads is None and head_dim is None and isinstance(getattr(src, "head_dim", None), int):
            return src.head_dim
        heads = heads or getattr(src, "num_attention_heads", None) or getattr(src, "n_head", None)
        hidden = hidden or getattr(src, "hidden_size", None) or getattr(src, "n_embd", None)
    heads = n_heads or heads
    hidden = hidden or hidden_size
    if heads is None or hidden is None:
        raise ValueError(
            "Adam-mini needs the number of attention heads for its per-head blocks: pass n_heads= "
            "(and head_dim= if it is not hidden_size / n_heads), or give the model whose config has "
            "num_attention_heads/hidden_size (Hugging Face) or n_head/n_embd (nanoGPT)"
        )
    if not isinstance(heads, int) or heads <= 0 or hidden % heads:
        raise ValueError(f"n_heads={heads!r} must be a positive integer dividing the hidden size {hidden}")
    return hidden // heads


def lowrank_param_groups(
    params: NamedParameters,
    targets: set[str],
    weight_decay: float,
    weight_decay_rule: str,
    lowrank_options: dict,
    dense_options: dict,
) -> list[dict]:
    """Param groups (low-rank or dense) x (decayed or not), each a list of (name, parameter) pairs."""
    decays = params.decays(weight_decay_rule)
    groups = []
    for is_target, options in ((True, lowrank_options), (False, dense_options)):
        for decayed in (True, False):
            chosen = [(n, p) for n, p in params.named if (n in targets) == is_target and decays[n] == decayed]
            if chosen:
                groups.append({"params": chosen, "weight_decay": weight_decay if decayed else 0.0, **options})
    return groups
