"""Data: the offline GPT-2 tokenizer, token files and their batches, the embedded demo corpus."""
