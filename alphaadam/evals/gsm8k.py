"""Score a causal language model on GSM8K with lm-evaluation-harness (Table 2's accuracy).

    python -m alphaadam.evals.gsm8k --checkpoint results/runs/.../model   # a fine-tuned HF folder
    python -m alphaadam.evals.gsm8k --checkpoint DIR --protocol v03 --limit 100

The task is lm-eval's own ``gsm8k`` (the question as ``Question: ...\\nAnswer:``, greedy decoding),
written into a task file at run time so that the dataset revision, the rows (``embedded``, a local
directory) and the protocol are ours: 0-shot (passed explicitly; lm-eval's task defaults to 5),
``max_gen_toks`` 256. Table 2's accuracy is ``exact_match`` under the ``strict-match`` filter (the
``#### <number>`` the model writes); ``flexible-extract`` (the last number) is stored beside it.

``protocol``:

* ``lm_eval`` (default): the current task's rules (stop at ``Question:``; case, ``$``, commas and a
  final ``.`` ignored; the tokenizer's BOS);
* ``v03``: the rules of lm-eval 0.3.0, which the anchors' pipeline (MicroAdam's llm-foundry scripts,
  also used by LDAdam) scored with: generation also stops at ``:``, only commas and the reasoning
  before ``#### `` are ignored, and no BOS is added.

The full lm-eval results (``results.json``) and every sample (``samples.jsonl``) are kept in the
output directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alphaadam.data.gsm8k import HUB_ID, load_rows

PROTOCOLS = ("lm_eval", "v03")
TASK = "gsm8k_alphaadam"

_RULES = {
    "lm_eval": {
        "until": ["Question:", "</s>", "<|im_end|>"],
        "ignore_case": True,
        "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
    },
    "v03": {
        "until": [":", "Question:", "Question"],
        "ignore_case": False,
        "regexes_to_ignore": [",", "(?s).*#### "],
    },
}
_STRICT = {
    "name": "strict-match",
    "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"}],
}
_FLEXIBLE = {
    "name": "flexible-extract",
    "filter": [{"function": "regex", "group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"}],
}


def task_config(protocol: str, dataset: dict, max_gen_toks: int = 256) -> dict:
    """lm-eval's gsm8k task under ``protocol``, reading ``dataset`` (``dataset_path`` and kwargs)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not one of {', '.join(PROTOCOLS)}")
    rules = _RULES[protocol]
    filters = [_STRICT] if protocol == "v03" else [_STRICT, _FLEXIBLE]
    return {
        "task": TASK,
        **dataset,
        "output_type": "generate_until",
        "training_split": "train",
        "fewshot_split": "train",
        "test_split": "test",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "metric_list": [
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                "ignore_case": rules["ignore_case"],
                "ignore_punctuation": False,
                "regexes_to_ignore": rules["regexes_to_ignore"],
            }
        ],
        "generation_kwargs": {
            "until": rules["until"],
            "do_sample": False,
            "temperature": 0.0,
            "max_gen_toks": max_gen_toks,
        },
        "repeats": 1,
        "num_fewshot": 0,
        "filter_list": [{**f, "filter": [*f["filter"], {"function": "take_first"}]} for f in filters],
        "metadata": {"version": 3.0},
    }


def dataset_source(out: Path, data: str, revision: str | None) -> dict:
    """Where the task reads its rows: the hub at ``revision``, or a JSON file written into ``out``
    (absolute: lm-eval resolves ``data_files`` against the working directory)."""
    if data == "hub":
        kwargs = {"revision": revision} if revision else {}
        return {"dataset_path": HUB_ID, "dataset_name": "main", "dataset_kwargs": kwargs}
    rows = load_rows(data)
    files = {}
    for split, split_rows in rows.items():
        file = (out / f"gsm8k_{split}.jsonl").resolve()
        file.write_text("".join(json.dumps(r) + "\n" for r in split_rows))
        files[split] = str(file)
    return {"dataset_path": "json", "dataset_kwargs": {"data_files": files}}


def huggingface_lm(model, tokenizer, protocol: str = "lm_eval", batch_size: int = 16, device: str = "cpu"):
    """lm-eval's wrapper around an HF causal LM (or a folder), with the protocol's BOS rule."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        device=device,
        add_bos_token=False if protocol == "v03" else None,  # None: the tokenizer's default (BOS for Llama)
    )


def evaluate(
    lm,
    out: str | Path,
    data: str = "hub",
    revision: str | None = None,
    protocol: str = "lm_eval",
    num_fewshot: int = 0,
    limit: int | None = None,
    max_gen_toks: int = 256,
) -> dict:
    """Score ``lm`` (an lm-eval model, e.g. :func:`huggingface_lm`) and return ``{"accuracy",
    "accuracy_flexible"}`` (fractions; no ``accuracy_flexible`` under ``v03``); lm-eval's results and
    samples go to ``out``."""
    import lm_eval  # heavy; imported when scoring
    from lm_eval.tasks import TaskManager

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = task_config(protocol, dataset_source(out, data, revision), max_gen_toks)
    (out / f"{TASK}.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(out), include_defaults=False),
        num_fewshot=num_fewshot,
        limit=limit,
        bootstrap_iters=0,
        log_samples=True,
    )
    samples = results.pop("samples")[TASK]
    with open(out / "samples.jsonl", "w") as f:
        for sample in samples:
            f.write(json.dumps(sample, default=str) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    scores = results["results"][TASK]
    found = {"accuracy": "exact_match,strict-match", "accuracy_flexible": "exact_match,flexible-extract"}
    return {name: float(scores[key]) for name, key in found.items() if key in scores}


def pinned_revision() -> str | None:
    """The recipe's pin of the hub dataset (``data.revision`` of its entry config)."""
    from omegaconf import OmegaConf

    from alphaadam.paths import CONFIG_DIR

    return OmegaConf.load(CONFIG_DIR / "finetune_gsm8k" / "finetune_gsm8k.yaml").data.revision


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score a Hugging Face causal LM on GSM8K with lm-eval.")
    parser.add_argument("--checkpoint", required=True, help="a folder with the model and tokenizer files")
    parser.add_argument(
        "--out", help="where results.json and samples.jsonl go (default: CHECKPOINT/../gsm8k_eval)"
    )
    parser.add_argument("--data", default="hub", help="hub | embedded | a local directory (train/test.jsonl)")
    parser.add_argument(
        "--revision",
        default=pinned_revision(),
        help="the openai/gsm8k commit (hub data); default: the recipe's pin, so scores match training's",
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="lm_eval")
    parser.add_argument("--num-fewshot", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-gen-toks", type=int, default=256)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--dtype", default="auto", help="auto | bfloat16 | float32 ...")
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = Path(args.checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise SystemExit(
            f"error: --checkpoint {checkpoint} has no config.json: pass a saved Hugging Face model folder"
        )
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=args.dtype).to(args.device).eval()
    model.config.use_cache = True  # training with activation checkpointing saves it off; generation needs it
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    out = Path(args.out) if args.out else checkpoint.parent / "gsm8k_eval"
    lm = huggingface_lm(model, tokenizer, args.protocol, args.batch_size, args.device)
    scores = evaluate(
        lm,
        out,
        data=args.data,
        revision=args.revision,
        protocol=args.protocol,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        max_gen_toks=args.max_gen_toks,
    )
    print(json.dumps(scores))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
