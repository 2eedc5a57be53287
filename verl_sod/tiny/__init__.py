"""Tiny local models: a byte-level Qwen3-style chat tokenizer, tiny Qwen3 models, supervised warm-up."""
