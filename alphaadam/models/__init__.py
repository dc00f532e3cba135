"""Models: the nanoGPT-style GPT used for pretraining."""

from alphaadam.models.gpt import GPT, PRESETS, GPTConfig

__all__ = ["GPT", "PRESETS", "GPTConfig"]
