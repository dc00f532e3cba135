"""lm-eval scoring of GSM8K on local rows: a stub that writes the gold answer scores 1.0 under both
protocols; a random tiny Llama gives results in range, with lm-eval's results and samples kept."""

import json

import pytest
from lm_eval.api.model import LM

from alphaadam.data.gsm8k import embedded_rows
from alphaadam.evals.gsm8k import evaluate, huggingface_lm, task_config
from alphaadam.models.tiny_llama import build


class GoldStub(LM):
    """Writes some reasoning, then the row's own ``#### <gold>``."""

    def generate_until(self, requests, disable_tqdm=False):
        return [
            f" Some reasoning, 1,000 steps.\n#### {r.doc['answer'].rsplit('#### ', 1)[1]}" for r in requests
        ]

    def loglikelihood(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


@pytest.mark.parametrize("protocol", ["lm_eval", "v03"])
def test_gold_answers_score_one(tmp_path, protocol):
    scores = evaluate(GoldStub(), tmp_path, data="embedded", protocol=protocol)
    assert scores["accuracy"] == 1.0
    assert scores.get("accuracy_flexible", 1.0) == 1.0
    assert ("accuracy_flexible" in scores) == (protocol == "lm_eval")


def test_protocols_differ_where_the_anchors_did():
    now, old = task_config("lm_eval", {}), task_config("v03", {})
    assert ":" in old["generation_kwargs"]["until"] and ":" not in now["generation_kwargs"]["until"]
    assert now["num_fewshot"] == old["num_fewshot"] == 0
    assert now["generation_kwargs"]["max_gen_toks"] == 256
    with pytest.raises(ValueError, match="protocol"):
        task_config("v02", {})


def test_random_llama_on_five_rows_keeps_results_and_samples(tmp_path):
    rows = embedded_rows()
    model, tok = build([r["question"] + " " + r["answer"] for r in rows] * 5, 300, 32, 1, 2, 1, 64, seed=0)
    scores = evaluate(
        huggingface_lm(model.eval(), tok, batch_size=8), tmp_path, data="embedded", limit=5, max_gen_toks=16
    )
    assert set(scores) == {"accuracy", "accuracy_flexible"} and all(0 <= v <= 1 for v in scores.values())
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["n-samples"]["gsm8k_alphaadam"]["effective"] == 5
    assert results["configs"]["gsm8k_alphaadam"]["num_fewshot"] == 0
    samples = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 10  # five rows, two filters
