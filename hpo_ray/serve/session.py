"""Live speech into a policy: audio → the speech encoder's streaming frames → one dialogue turn per
`data.turn_frames` frames on the streaming translator. The end of the audio flushes the encoder and
translates what is left as a last, shorter turn — the turns `hpo-ray eval` runs on the same talk's
pre-encoded frames.
"""

import json
from pathlib import Path

import numpy as np

from hpo_ray.config import ConfigError, load_config
from hpo_ray.config.serve import StreamProcessorConfig
from hpo_ray.devices import resolve_device
from hpo_ray.dialogue import make_layout
from hpo_ray.reward.units import units_from_turns
from hpo_ray.rollout.torch_engine import TorchEngine

from .streaming import StreamingTranslator, TurnResult


def turn_units(text: str, char_level: bool) -> list[str]:
    """The latency units of one reply, exactly as the reward and `instances.log` split it."""
    return list(units_from_turns([text], 0.0, char_level).tokens)


class SpeechSession:
    """One talk: `push(samples)` / `finish()` return the turns the new audio completed."""

    def __init__(self, frames_source, translator: StreamingTranslator, turn_frames: int, char_level: bool):
        self.source, self.translator = frames_source, translator
        self.turn_frames, self.char_level = turn_frames, char_level
        self._ready = np.zeros((0, translator.engine.model.config.hidden_size), np.float32)
        self.finished = False

    def push(self, samples: np.ndarray) -> list[TurnResult]:
        """Feed 16 kHz mono float samples; a turn runs for every `turn_frames` frames now complete."""
        return self._run(self.source.push(samples), final=False)

    def finish(self) -> list[TurnResult]:
        """End of the audio: the encoder's last frames, and a last turn for any frames left."""
        if self.finished:
            raise RuntimeError("SpeechSession.finish called twice")
        self.finished = True
        return self._run(self.source.flush(), final=True)

    def _run(self, frames: np.ndarray, final: bool) -> list[TurnResult]:
        ready = np.concatenate([self._ready, frames]) if len(frames) else self._ready
        done = []
        while len(ready) >= self.turn_frames or (final and len(ready)):
            n = min(self.turn_frames, len(ready))
            done.append(self.translator.turn(ready[:n]))
            ready = ready[n:]
        self._ready = ready
        return done


class StreamingPolicy:
    """A speech LLM loaded once, with what each of its streams needs: layout, turn size, sampling."""

    def __init__(self, settings: StreamProcessorConfig):
        from hpo_ray.speech.encode import check_compatible
        from hpo_ray.speech.model import SpeechLLM

        self.settings = settings
        self.run = load_config(settings.config, settings.overrides)
        checkpoint = settings.checkpoint or self.run.model.path
        if checkpoint is None:
            raise ConfigError("checkpoint", "no speech LLM: set checkpoint (or model.path in the run config)")
        device = resolve_device(settings.device or self.run.rollout.device, "device" if settings.device else "rollout.device")
        self.model = SpeechLLM.from_pretrained(checkpoint, device=str(device))
        check_compatible(self.model, self.run)
        self.layout = make_layout(self.run, self.model.tokenizer)
        self.sampling = settings.sampling or self.run.rollout.validation_sampling
        self.chunk_seconds = settings.speech_chunk_size or self.run.data.turn_seconds

    def engine(self) -> TorchEngine:
        """A torch engine over the shared LLM (its own stats; the weights are shared read-only), with the
        bounded context of inference (`rollout.context`) as `hpo-ray eval` runs it: streams of any length."""
        return TorchEngine(self.model.llm, self.layout, self.run.rollout.max_total_tokens, context=self.run.rollout.context_window())

    def open(self, engine: TorchEngine, src_lang: str, tgt_lang: str, talk_id: str = "stream") -> SpeechSession:
        """A session for one talk; the latency unit must be the one `tgt_lang` is scored in."""
        char = self.run.reward.is_char_level(tgt_lang)
        if (self.settings.latency_unit == "char") != char:
            raise ConfigError(
                "latency_unit",
                f"{self.settings.latency_unit!r}, but {tgt_lang} is scored in {'char' if char else 'word'} units (reward.char_languages)",
            )
        translator = StreamingTranslator(engine, src_lang, tgt_lang, self.sampling, self.settings.seed, talk_id, self.run.data.multiplier)
        return SpeechSession(self.model.stream(), translator, self.run.data.turn_frames, char)


def append_turn_log(path: Path, stream: str, first_turn: int, turns: list[TurnResult]) -> None:
    """One JSON line per turn (what it prefilled and decoded) for KV-reuse checks and profiling."""
    with open(path, "a", encoding="utf-8") as f:
        for k, t in enumerate(turns, first_turn):
            f.write(json.dumps({"stream": stream, "turn": k, **t.__dict__}) + "\n")
