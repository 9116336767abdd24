"""The speech side of `hpo-ray demo` (the default, configs/demo.yaml): the job on spoken talks.

synth speaks the talks (eSpeak NG) → the tiny LLM + a fresh chunk-causal speech encoder → two-stage SFT
(`hpo-ray sft-speech`: the encoder learns to hear by CTC, every split is encoded with it chunk by chunk
as `hpo-ray encode` does, then the LLM learns to translate with the encoder frozen) → HPO and
evaluation on those features, exactly as the vector demo (`--vectors`; docs/speech.md).
"""

import json
from pathlib import Path

from hpo_ray.cli.pipeline import StageLog, build_tiny_model, stage
from hpo_ray.config import ConfigError, RunConfig

FEATURES = "features"  # under run.dir: every split as encoded by the SFT encoder; HPO and eval read these
SPLIT_KEYS = {"train": "train_manifest", "dev": "dev_manifest", "test": "test_manifest"}


def check_feature_paths(cfg: RunConfig, root: Path) -> None:
    """HPO and eval must read the manifests the SFT encoder writes under `root/features/` (checked before any stage)."""
    for split, key in SPLIT_KEYS.items():
        want, got = root / FEATURES / split / "manifest.parquet", getattr(cfg.data, key)
        if got is None or Path(got).resolve() != want.resolve():
            raise ConfigError(f"data.{key}", f"is {got}; the speech demo encodes the {split} talks into {want}: point it there")


def speech_start(cfg: RunConfig, root: Path, tag: "str | StageLog") -> None:
    """The tiny speech LLM at `root/init`, then its two-stage SFT into `model.path` (features into `root/features/`)."""
    from hpo_ray.synth import AUDIO_MANIFEST

    data, init, sft = root / "data", root / "init", Path(cfg.model.path)
    build_tiny_model(cfg, data / "train" / AUDIO_MANIFEST, init, tag, speech=True)
    if stage("two-stage speech SFT (hear by CTC, encode train/dev/test, translate)", finetuned(sft), tag):
        from hpo_ray.speech.sft_speech import speech_finetune

        speech_finetune(cfg, init, data, sft, root / FEATURES)


def finetuned(sft: Path) -> bool:
    """Whether `sft` holds a finished two-stage SFT (stage 2 alone writes a summary without `hear`)."""
    path = sft / "sft_summary.json"
    return path.is_file() and "hear" in json.loads(path.read_text())


def input_lines(cfg: RunConfig, root: Path, streamed: bool) -> list[str]:
    """The report's paragraph on the input: audio, how much of it, and how the policies heard it."""
    meta = json.loads((root / "data" / "meta.json").read_text())
    summary = json.loads((Path(cfg.model.path) / "sft_summary.json").read_text())
    hear, translate, seconds = summary["hear"], summary["translate"], summary.get("seconds", {})
    audio = {split: frames * meta["frame_seconds"] for split, frames in meta["frames"].items()}
    voices = {s["voice"] for s in meta["speech"]["speakers"].values()}

    def num(value, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    split_talks = " / ".join(f"{meta['talks'][s]} {s}" for s in ("train", "dev", "test"))
    lines = [
        f"**Input: audio.** {sum(meta['talks'].values())} synthetic talks spoken by eSpeak NG {meta['speech']['engine']} "
        f"into {meta['speech']['sample_rate']} Hz mono wav files ({len(voices)} voices, {sum(audio.values()):.0f} s of speech; "
        f"{split_talks} talks, {audio['test']:.0f} s of test audio). The policies hear them through the chunk-causal "
        f"speech encoder (docs/speech.md): SFT stage 1 taught it by CTC on the source words (dev WER on sentence crops "
        f"{num(hear['dev_wer_before'])} → {num(hear['dev_wer'])}{talk_wer(hear)}); every split was then encoded with it chunk by chunk "
        f"into `{FEATURES}/` (as `hpo-ray encode` does); stage 2 fine-tuned the LLM on those frames with the encoder "
        f"frozen (sft.epochs = {cfg.sft.epochs}, dev loss {num(translate['dev_loss_before'])} → {num(translate['dev_loss_after'])}). "
        "SFT and HPO below are scored on the held-out test talks' frames from that encoder"
        + ("; the OmniSTEval section streams the test talks' wav files through simulstream." if streamed else "."),
    ]
    if seconds:
        lines += ["", "Two-stage speech SFT: " + ", ".join(f"{part} {s:.1f} s" for part, s in seconds.items()) + "."]
    return lines


def talk_wer(hear: dict) -> str:
    """The report's words on the hearing of whole streamed talks (absent from summaries before it was measured)."""
    if hear.get("talk_dev_wer") is None:
        return ""
    if not hear.get("talk_epochs"):
        return f", on whole streamed dev talks {hear['talk_dev_wer']:.3f}"
    before, after = hear["talk_dev_wer_before"], hear["talk_dev_wer"]
    return f"; then {hear['talk_epochs']} epochs on whole talks: streamed dev WER {before:.3f} → {after:.3f}"
