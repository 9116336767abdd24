"""Shared pieces of the benchmarks (learner here; sync and step in hpo_ray/cli, which need Ray): a tiny policy and synthetic dialogue
sequences built in a temp dir (nothing downloaded), timing helpers, and the machine-load note."""

import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hpo_ray.config import RunConfig
from hpo_ray.dialogue import DialogueLayout
from hpo_ray.learner.batch import SequenceItem

TOKENIZER_TEXTS = [
    "ka lomi teru sa .",
    "mi tora pelu ka lomi .",
    "sa nuvi ka tora peli mi .",
    "Translate the following speech from English to German.",
] * 8
WORDS = ["ka", "lomi", "teru", "sa", "mi", "tora", "pelu", "nuvi", "peli", "."]


def build_policy(cfg: RunConfig, out_dir: Path) -> Path:
    """`cfg.model.path` when set, else a tiny model built from `cfg.model.tiny` saved to `out_dir`."""
    if cfg.model.path is not None:
        return Path(cfg.model.path)
    from hpo_ray.model.build import build_tiny_model, save_policy
    from hpo_ray.model.tokenizer import train_tokenizer

    tok = train_tokenizer(TOKENIZER_TEXTS, vocab_size=cfg.model.tiny.vocab_size, placeholder_token=cfg.model.placeholder_token)
    return save_policy(build_tiny_model(cfg.model.tiny, tok), tok, out_dir)


def dialogue_items(
    layout: DialogueLayout, hidden: int, folder: Path, n: int, turns: int, turn_frames: int, words_per_turn: int, seed: int
) -> list[SequenceItem]:
    """`n` rollout-like dialogues of `turns` turns (user frames, then a few assistant words), with
    random frames, rollout logprobs and advantages; frames go to one .npy file per dialogue."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        spec = [(turn_frames, " ".join(rng.choice(WORDS, int(rng.integers(0, words_per_turn + 1))))) for _ in range(turns)]
        d = layout.build_text("en", "de", spec)
        path = folder / f"frames_{i}.npy"
        np.save(path, rng.standard_normal((d.n_frames, hidden)).astype(np.float32))
        n_gen = sum(d.assistant_mask[1:])
        items.append(
            SequenceItem(
                d.input_ids,
                d.assistant_mask,
                list(rng.normal(-3.0, 0.5, n_gen)),
                float(rng.normal()),
                str(path),
                None,
                d.n_frames,
                f"g{i // 2}",
            )
        )
    return items


def quiet_transformers() -> None:
    """No per-load progress bars from transformers in benchmark output."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], warmup: int, repeats: int) -> tuple[float, list[float]]:
    """Median wall seconds of `repeats` calls after `warmup` untimed calls, and all timed samples."""
    for _ in range(warmup):
        fn()
    samples = [timed(fn) for _ in range(repeats)]
    return statistics.median(samples), samples


def load_note() -> str:
    """The machine's CPU count and 1-minute load (others may share the cores)."""
    try:
        load = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        load = "n/a"
    return f"{os.cpu_count()} CPU cores, 1-min load average {load} at start"


def finite_json(result: dict) -> str:
    """One JSON line; raises if a headline number is not finite (a benchmark bug, not a slow machine)."""
    for key, value in result.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"benchmark figure {key} is {value}")
    return json.dumps(result)
