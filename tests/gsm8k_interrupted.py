"""The GSM8K recipe's command line with a Ctrl-C on every process at training step STEP:
``torchrun tests/gsm8k_interrupted.py STEP overrides...``, a kill at a known point of a multi-process run."""

import sys

import recipes.finetune_gsm8k as recipe
from alphaadam.train.session import run_main
from tests.run_helpers import interrupt_at

if __name__ == "__main__":
    recipe.divergence = interrupt_at(recipe, int(sys.argv.pop(1)))
    run_main(recipe.train, recipe.RECIPE)
