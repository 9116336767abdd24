"""The speech side of the speech LLM: log-mel features, the chunk-causal encoder + projector, and the
encoder's streaming state. HPO itself trains on features these produce (`hpo-ray encode`)."""
