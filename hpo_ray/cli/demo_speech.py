"""The demo's speech stages: a tiny speech LLM, then two-stage SFT whose encoded features HPO trains on.

The encoded features live in the folder above `data.sft_dir` (`runs/demo/features/` in configs/demo.yaml),
so `data.train_manifest` / `dev_manifest` must name that folder's `{train,dev}/manifest.parquet`.
"""

from pathlib import Path

from hpo_ray.config import ConfigError, RunConfig


def features_dir(cfg: RunConfig) -> Path:
    """Where sft-speech encodes every split; checked against the manifests HPO will read."""
    folder = Path(cfg.data.sft_dir).parent
    for split, manifest in (("train", cfg.data.train_manifest), ("dev", cfg.data.dev_manifest)):
        want = folder / split / "manifest.parquet"
        if manifest is not None and Path(manifest) != want:
            raise ConfigError(f"data.{split}_manifest", f"on spoken talks the demo encodes the {split} split into {want} "
                              f"(beside data.sft_dir={cfg.data.sft_dir}); got {manifest}")
    return folder


def build_speech_model(cfg: RunConfig, data: Path, out: Path) -> None:
    """Tokenizer from the spoken train/dev talks' text, tiny LLM, fresh encoder + projector (`model.speech`)."""
    from hpo_ray.model.prepare import prepare_tiny_policy
    from hpo_ray.speech.model import SpeechLLM

    manifests = [data / split / "audio_manifest.parquet" for split in ("train", "dev")]
    prepare_tiny_policy(cfg, [m for m in manifests if m.is_file()], out)
    SpeechLLM.from_policy(out, cfg.model.speech).save_pretrained(out)


def speech_sft(cfg: RunConfig, data: Path, init: Path, out: Path) -> None:
    """`hpo-ray sft-speech`: hear (CTC), encode every split into `features_dir(cfg)`, translate (encoder frozen)."""
    from hpo_ray.speech.sft_speech import speech_finetune

    speech_finetune(cfg, init, data, out, features_dir(cfg))
