"""`hpo-ray eval` core: run a policy over a manifest's talks at one chunk multiplier, write the files
long-form scorers read unchanged (SimulEval `instances.log`, MuST-C segment YAML, references), and
our own scores (corpus chrF/BLEU, the configured quality, StreamLAAL, HPO latency, length ratio).

One talk is one long-form recording. A unit written after turn k carries the NCA delay
min((k+1)·turn_seconds, talk duration): the audio read when it was written. Talks of any length
are read to their end: the engine keeps a bounded context window (`rollout.context`).
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.chrf import CHRF
from tqdm import tqdm

from hpo_ray.config import (
    ConfigError,
    DataConfig,
    RewardConfig,
    RunConfig,
    apply_overrides,
    parse_config,
)
from hpo_ray.data.manifest import Manifest, Talk
from hpo_ray.experience import rollout_record, talk_input
from hpo_ray.reward import (
    RewardFunction,
    RolloutScore,
    RolloutText,
    stream_laal,
    units_from_turns,
)
from hpo_ray.reward.sacre import bleu_tokenizer
from hpo_ray.rollout_summary import summarize

if TYPE_CHECKING:
    from hpo_ray.rollout.protocol import RolloutEngine

INSTANCES = "instances.log"
SEGMENTS = "segments.yaml"
REFERENCES = "references.txt"
SOURCES = "sources.txt"


@dataclass(frozen=True)
class TalkOutput:
    """What one dialogue wrote for a talk: `turn_texts[k]` after turn k ("" = wait)."""

    talk: Talk
    sample: int
    turn_texts: list[str]
    truncated: bool = False
    context_slides: int = 0

    @property
    def group_id(self) -> str:
        """The talk's group (with `turn_texts`, all that `rollout_record` reads from a trajectory)."""
        return self.talk.group_id

    @property
    def rollout_id(self) -> str:
        return f"{self.talk.talk_id}#{self.sample}"


def config_at_multiplier(cfg: RunConfig, multiplier: int) -> RunConfig:
    """`cfg` with `data.multiplier` set (and `data.chunk_seconds` dropped: it was pinned to the old one)."""
    tree = apply_overrides(cfg.model_dump(mode="json"), [f"data.multiplier={multiplier}", "data.chunk_seconds=null"])
    return parse_config(tree)


def policy_width(checkpoint: str | Path) -> int:
    """The hidden size of the HF policy at `checkpoint`, read from config.json without loading weights."""
    config = Path(checkpoint) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint}: not an HF model directory (config.json missing)")
    width = json.loads(config.read_text()).get("hidden_size")
    if not isinstance(width, int):
        raise ValueError(f"checkpoint {checkpoint}: config.json has no integer hidden_size")
    return width


def open_manifest(cfg: RunConfig, checkpoint: str | Path, manifest_path: str | Path) -> Manifest:
    """The validated manifest (feature width = the policy's hidden size); cheap, so it runs before the model loads."""
    manifest = Manifest(manifest_path, width=policy_width(checkpoint), frame_seconds=cfg.data.frame_seconds)
    for talk in manifest:
        try:
            cfg.reward.splitters_for(talk.tgt_lang)
        except ValueError as exc:
            raise ConfigError(f"reward.splitters.{talk.tgt_lang}", f"{manifest_path} talk {talk.talk_id!r}: {exc}") from None
    return manifest


def check_samples(cfg: RunConfig, samples: int) -> None:
    """Several samples per talk only make sense when validation sampling is not greedy."""
    if samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples}")
    if samples > 1 and cfg.rollout.validation_sampling.greedy:
        raise ConfigError("rollout.validation_sampling.greedy", f"greedy decoding makes all {samples} samples identical; set it to false")


def run_policy(engine, talks: Sequence[Talk], cfg: RunConfig, samples: int = 1, talks_per_batch: int | None = None) -> list[TalkOutput]:
    """Every talk read to its end `samples` times with `rollout.validation_sampling`, in (sample, talk) order."""
    check_samples(cfg, samples)
    sampling = cfg.rollout.validation_sampling
    step = talks_per_batch or len(talks)
    by_id = {t.talk_id: t for t in talks}
    found: dict[tuple[int, str], TalkOutput] = {}
    bar = tqdm(total=len(talks) * samples, desc=f"eval m={cfg.data.multiplier}", disable=not cfg.logging.progress, dynamic_ncols=True)
    for start in range(0, len(talks), step):
        inputs = [talk_input(t, cfg.data, None) for t in talks[start : start + step]]
        for traj in engine.generate(inputs, samples, sampling, cfg.run.seed + start):
            found[(traj.sample_index, traj.talk_id)] = TalkOutput(
                by_id[traj.talk_id], traj.sample_index, list(traj.turn_texts), traj.truncated, traj.stats.get("context_slides", 0)
            )
            bar.update(1)
    bar.close()
    return [found[(s, t.talk_id)] for s in range(samples) for t in talks]


def wav_name(talk: Talk) -> str:
    """The pseudo recording name of a talk in the segment YAML and `instances.log`."""
    return talk.talk_id.replace("/", "_").replace("\\", "_") + ".wav"


def _line(text: str) -> str:
    """One line, single-spaced: scorers count word units with `split(" ")`, ours with `split()`."""
    return " ".join(text.split())


def instance_record(index: int, out: TalkOutput, data: DataConfig, reward: RewardConfig) -> dict:
    """One SimulEval `instances.log` line: the whole talk's prediction with one NCA delay (ms) per unit."""
    talk = out.talk
    char = reward.is_char_level(talk.tgt_lang)
    units = units_from_turns(out.turn_texts, data.turn_seconds, char, talk.seconds)
    delays = [round(d * 1000.0, 3) for d in units.delays]
    joiner = "" if char else " "
    return {
        "index": index,
        "prediction": joiner.join(units.tokens),
        "delays": delays,
        "elapsed": list(delays),
        "prediction_length": len(units),
        "reference": joiner.join(_line(r) for r in talk.ref_sentences),
        "source": [wav_name(talk)],
        "source_length": round(talk.seconds * 1000.0, 3),
    }


def write_reference_files(out_dir: Path, talks: Sequence[Talk]) -> None:
    """MuST-C-style segment YAML (one entry per reference sentence, talk order) with aligned references and sources."""
    names = [wav_name(t) for t in talks]
    if len(set(names)) != len(names):
        raise ValueError("two talk ids map to the same recording name after replacing path separators")
    entries, refs, srcs = [], [], []
    for talk, wav in zip(talks, names):
        for (start, end), ref, src in zip(talk.segments, talk.ref_sentences, talk.src_sentences):
            entries.append({"wav": wav, "offset": start, "duration": round(end - start, 6), "speaker_id": f"spk.{talk.talk_id}"})
            refs.append(_line(ref))
            srcs.append(_line(src))
    (out_dir / SEGMENTS).write_text(
        yaml.safe_dump(entries, default_flow_style=None, sort_keys=False, allow_unicode=True, width=10**6), encoding="utf-8"
    )
    (out_dir / REFERENCES).write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    (out_dir / SOURCES).write_text("".join(s + "\n" for s in srcs), encoding="utf-8")


def write_instances(path: Path, outputs: Sequence[TalkOutput], data: DataConfig, reward: RewardConfig) -> None:
    """`instances.log`: one JSON line per talk (one recording), in manifest order."""
    lines = [json.dumps(instance_record(i, o, data, reward), ensure_ascii=False) for i, o in enumerate(outputs)]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def corpus_quality(scores: Sequence[RolloutScore], talks: Sequence[Talk]) -> dict[str, float]:
    """Corpus chrF and BLEU over the resegmented sentences, per target language (BLEU tokenizer by language), then averaged."""
    by_lang: dict[str, tuple[list[str], list[str]]] = {}
    for score, talk in zip(scores, talks):
        hyps, refs = by_lang.setdefault(talk.tgt_lang, ([], []))
        for sentence in score.sentences:
            hyps.append(sentence.hyp)
            refs.append(talk.ref_sentences[sentence.ref_index])
    chrf = [CHRF().corpus_score(h, [r]).score for h, r in by_lang.values()]
    bleu = [BLEU(tokenize=bleu_tokenizer(lang)).corpus_score(h, [r]).score for lang, (h, r) in by_lang.items()]
    return {"chrf": sum(chrf) / len(chrf), "bleu": sum(bleu) / len(bleu)}


def _none_as_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def score_outputs(outputs: Sequence[TalkOutput], cfg: RunConfig, reward: RewardFunction | None = None) -> tuple[dict, list[RolloutScore]]:
    """Our metrics over all outputs and the per-rollout scores.

    `stream_laal` is the corpus mean over every non-empty resegmented sentence of every talk (as the
    FBK/simulstream scripts and OmniSTEval average); `stream_laal_talk_mean` averages per-talk means
    (what training validation reports). Corpus chrF/BLEU are computed per sample, then averaged.
    """
    reward = reward if reward is not None else RewardFunction(cfg.reward)
    texts = [RolloutText.from_json(rollout_record(o, o.talk, cfg.data, o.rollout_id)) for o in outputs]
    scores = reward.score(texts)
    talks = [o.talk for o in outputs]
    summary = summarize(scores, [t.ref_sentences for t in talks], [t.segments for t in talks], [t.tgt_lang for t in talks], cfg.reward)
    samples = sorted({o.sample for o in outputs})
    per_sample = [
        corpus_quality([s for s, o in zip(scores, outputs) if o.sample == k], [o.talk for o in outputs if o.sample == k]) for k in samples
    ]
    sentences = [s for score in scores for s in score.sentences]
    metrics = {
        "chrf": sum(q["chrf"] for q in per_sample) / len(per_sample),
        "bleu": sum(q["bleu"] for q in per_sample) / len(per_sample),
        "quality_metric": cfg.reward.quality,
        "quality": summary["quality"],
        "stream_laal": _none_as_nan(stream_laal([s.laal for s in sentences])),
        "stream_laal_talk_mean": summary["stream_laal_talk_mean"],
        "hpo_latency": summary["hpo_latency"],
        "length_ratio": summary["length_ratio"],
        "latency": summary["latency"],
        "hinged_latency": summary["hinged_latency"],
        "sentences": len(sentences),
        "empty_sentences": sum(not s.aligned for s in sentences),
        "bleu_tokenizer": {lang: bleu_tokenizer(lang) for lang in sorted({t.tgt_lang for t in talks})},
    }
    return metrics, scores


def _finite_or_none(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_outputs(
    out_dir: str | Path, outputs: Sequence[TalkOutput], cfg: RunConfig, reward: RewardFunction | None = None, extra: dict | None = None
) -> dict:
    """Write every eval file into `out_dir` and return the scores written to `scores.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = sorted({o.sample for o in outputs})
    first = [o for o in outputs if o.sample == samples[0]]
    write_reference_files(out_dir, [o.talk for o in first])
    for k in samples:
        name = INSTANCES if k == samples[0] else f"instances.sample{k}.log"
        write_instances(out_dir / name, [o for o in outputs if o.sample == k], cfg.data, cfg.reward)
    metrics, scores = score_outputs(outputs, cfg, reward)
    with open(out_dir / "rollouts.jsonl", "w", encoding="utf-8") as f:
        for o in outputs:
            record = rollout_record(o, o.talk, cfg.data, o.rollout_id)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(out_dir / "scored.jsonl", "w", encoding="utf-8") as f:
        for o, score in zip(outputs, scores):
            record = {
                **score.to_json(),
                "talk_id": o.talk.talk_id,
                "sample": o.sample,
                "sentences": [{**s.to_json(), "laal": s.laal} for s in score.sentences],
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    result = {
        **metrics,
        "multiplier": cfg.data.multiplier,
        "turn_seconds": cfg.data.turn_seconds,
        "talks": len(first),
        "samples": len(samples),
        "turns": sum(len(o.turn_texts) for o in outputs),
        "truncated": sum(o.truncated for o in outputs),
        "truncated_talks": len({o.talk.talk_id for o in outputs if o.truncated}),
        "context_slides": sum(o.context_slides for o in outputs),
        **(extra or {}),
    }
    result = {k: _finite_or_none(v) for k, v in result.items()}
    (out_dir / "scores.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result


def kv_memory(engine: "RolloutEngine") -> dict:
    """The context bound in force and the KV-cache peaks the engine measured (so far, if it is shared)."""
    stats, context = engine.stats, engine.context
    out = {"context_max_tokens": context[0] if context else None}
    out.update({k: stats[k] for k in ("peak_kv_tokens", "peak_kv_bytes") if k in stats})
    return out


def evaluate(
    cfg: RunConfig,
    checkpoint: str | Path,
    manifest_path: str | Path,
    multiplier: int,
    output_dir: str | Path,
    samples: int = 1,
    engine=None,
    reward: RewardFunction | None = None,
    talks_per_batch: int | None = None,
) -> dict:
    """Evaluate the policy at `checkpoint` on every talk of `manifest_path` at chunk multiplier `multiplier`.

    Pass an already built `engine` (and `reward`) to reuse them across multipliers; the manifest is
    validated before any model loads. Returns the `scores.json` dict.
    """
    cfg = config_at_multiplier(cfg, multiplier)
    manifest = open_manifest(cfg, checkpoint, manifest_path)
    check_samples(cfg, samples)
    if engine is None:
        from hpo_ray.rollout.factory import make_engine

        engine = make_engine(cfg, checkpoint, bounded_context=True)
    outputs = run_policy(engine, manifest.talks, cfg, samples, talks_per_batch)
    extra = {"checkpoint": str(checkpoint), "manifest": str(manifest_path), **kv_memory(engine)}
    return write_outputs(output_dir, outputs, cfg, reward, extra)


def evaluate_multipliers(
    cfg: RunConfig, checkpoint: str | Path, manifest_path: str | Path, multipliers: Sequence[int], output_root: str | Path, samples: int = 1
) -> list[dict]:
    """`evaluate` at each multiplier into `output_root/m<m>/`, loading the policy and the quality scorer once."""
    from hpo_ray.rollout.factory import make_engine

    open_manifest(cfg, checkpoint, manifest_path)
    engine = make_engine(cfg, checkpoint, bounded_context=True)
    reward = RewardFunction(cfg.reward)
    return [evaluate(cfg, checkpoint, manifest_path, m, Path(output_root) / f"m{m}", samples, engine, reward) for m in multipliers]
