"""Rollout engines: G streaming speech-chunk dialogues per talk, turn by turn, KV reused."""
