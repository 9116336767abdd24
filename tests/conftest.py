"""Shared fixtures: the process environment, a tiny tokenizer + model, and manifest writers."""

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hpo_ray.env import apply_defaults, apply_local_ray

apply_defaults()
apply_local_ray("disabled")  # the tests' own Rays are single-node, on loopback (cluster tests undo it)
os.environ.setdefault("DS_ACCELERATOR", "cpu")
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_TEXTS = [
    "ka lomi teru sa .",
    "mi tora pelu ka lomi .",
    "sa nuvi ka tora peli mi .",
    "Translate the following speech from English to German.",
] * 8


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from hpo_ray.model.tokenizer import train_tokenizer

    return train_tokenizer(TINY_TEXTS, vocab_size=320)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    from hpo_ray.config import TinyModelConfig
    from hpo_ray.model.build import build_tiny_model

    return build_tiny_model(TinyModelConfig(), tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory, tiny_model, tiny_tokenizer) -> Path:
    from hpo_ray.model.build import save_policy

    return save_policy(tiny_model, tiny_tokenizer, tmp_path_factory.mktemp("policy") / "tiny")


@pytest.fixture(scope="session")
def layout(tiny_tokenizer):
    from hpo_ray.dialogue import DialogueLayout

    return DialogueLayout(tiny_tokenizer)


def talk_row(talk_id: str, features_path: str, n_sent: int = 3, seconds_per_sent: float = 2.0, **over) -> dict:
    """A valid manifest row (sentences evenly spread) that tests can break one field at a time."""
    row = {
        "talk_id": talk_id,
        "features_path": features_path,
        "features_row": None,
        "frame_seconds": 0.08,
        "src_lang": "en",
        "tgt_lang": "de",
        "src_sentences": [f"source {k} ." for k in range(n_sent)],
        "ref_sentences": [f"ziel {k} ." for k in range(n_sent)],
        "segments": [{"start": k * seconds_per_sent + 0.1, "end": (k + 1) * seconds_per_sent - 0.1} for k in range(n_sent)],
    }
    row.update(over)
    return row


def write_manifest(folder: Path, rows: list[dict], frames: dict[str, np.ndarray]) -> Path:
    """Write feature files (name -> array) and a parquet manifest of `rows` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in frames.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(folder / name, arr)
    schema = pa.schema(
        [
            ("talk_id", pa.string()),
            ("features_path", pa.string()),
            ("features_row", pa.int64()),
            ("frame_seconds", pa.float64()),
            ("src_lang", pa.string()),
            ("tgt_lang", pa.string()),
            ("src_sentences", pa.list_(pa.string())),
            ("ref_sentences", pa.list_(pa.string())),
            ("segments", pa.list_(pa.struct([("start", pa.float64()), ("end", pa.float64())]))),
        ]
    )
    path = folder / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray per test module (2 logical CPUs, loopback, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parents[1])}},
        )
    yield ray
    ray.shutdown()


SMALL_DATA_OVERRIDES = [
    "data.synth.talks=8",
    "data.synth.min_talk_seconds=8",
    "data.synth.seed=3",
    "data.synth.sft_dialogues_per_talk=1",
]


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A small synthetic data set (short talks) and a freshly built tiny policy trained on its text.

    Returns (data_dir, policy_dir, overrides) where overrides point a config at them.
    """
    from hpo_ray.config import load_config
    from hpo_ray.model.prepare import prepare_tiny_policy
    from hpo_ray.synth import synthesize

    root = tmp_path_factory.mktemp("small_run")
    cfg = load_config(None, SMALL_DATA_OVERRIDES)
    synthesize(cfg, root / "data")
    policy = prepare_tiny_policy(cfg, [root / "data" / "train" / "manifest.parquet"], root / "policy")
    overrides = [
        f"model.path={policy}",
        f"data.train_manifest={root / 'data/train/manifest.parquet'}",
        f"data.dev_manifest={root / 'data/dev/manifest.parquet'}",
        f"data.sft_dir={root / 'data/sft'}",
        "rollout.sampling.max_new_tokens=6",
        "algorithm.talks_per_step=2",
        "algorithm.group_size=2",
        "validation.talks=1",
        "logging.progress=false",
        "logging.tensorboard=false",
        "cluster.include_dashboard=false",
    ]
    return root / "data", policy, overrides
