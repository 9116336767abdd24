"""The speech LLM: a locally trained tokenizer, a config-built tiny Qwen model, HF-format save/load."""
