"""The simulstream speech processor of an hpo-ray policy — the only module that imports simulstream.

    type: hpo_ray.serve.simulstream_processor.HpoRaySpeechProcessor   (see hpo_ray/config/serve.py)

Each audio chunk simulstream hands over is pushed through the speech encoder's stream; every full
turn of frames runs one user turn and one assistant turn on the dialogue's persistent KV cache,
and the reply's latency units (words, or characters for zh/ja) are emitted as new tokens. Nothing
is ever retracted. The end of the stream flushes the encoder and translates the rest.
"""

from types import SimpleNamespace

import numpy as np
from pydantic import ValidationError
from simulstream.server.speech_processors import SpeechProcessor
from simulstream.server.speech_processors.incremental_output import IncrementalOutput

from hpo_ray.config import ConfigError
from hpo_ray.config.serve import StreamProcessorConfig

from .session import SpeechSession, StreamingPolicy, append_turn_log, turn_units
from .streaming import TurnResult


def _plain(value):
    """simulstream's YAML namespace back to plain dicts and lists."""
    if isinstance(value, SimpleNamespace):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def processor_settings(config: SimpleNamespace) -> StreamProcessorConfig:
    """The validated processor config (unknown keys and bad values name the key)."""
    try:
        return StreamProcessorConfig.model_validate(_plain(config))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(".".join(str(p) for p in err["loc"]) or "<root>", err["msg"]) from None


class HpoRaySpeechProcessor(SpeechProcessor):
    """One stream at a time over a policy loaded once per process (simulstream's pool shares it)."""

    _policies: dict[str, StreamingPolicy] = {}

    @classmethod
    def load_model(cls, config: SimpleNamespace) -> None:
        settings = processor_settings(config)
        key = settings.model_dump_json()
        if key not in cls._policies:
            cls._policies[key] = StreamingPolicy(settings)

    def __init__(self, config: SimpleNamespace):
        super().__init__(config)
        self.settings = processor_settings(config)
        self.policy = self._policies[self.settings.model_dump_json()]
        self.engine = self.policy.engine()
        self.src_lang, self.tgt_lang = self.settings.src_lang, self.settings.tgt_lang
        self.streams = 0
        self.session: SpeechSession | None = None
        self.turns: list[TurnResult] = []

    @property
    def speech_chunk_size(self) -> float:
        return self.policy.chunk_seconds

    def set_source_language(self, language: str) -> None:
        self.src_lang = language

    def set_target_language(self, language: str) -> None:
        self.tgt_lang = language

    def process_chunk(self, waveform: np.float32) -> IncrementalOutput:
        return self._emit(self._session().push(waveform))

    def end_of_stream(self) -> IncrementalOutput:
        return self._emit(self._session().finish())

    def tokens_to_string(self, tokens: list[str]) -> str:
        return ("" if self.settings.latency_unit == "char" else " ").join(tokens)

    def clear(self) -> None:
        self.session, self.turns = None, []

    def _session(self) -> SpeechSession:
        """The current talk's session, opened at its first audio with the languages set by then."""
        if self.session is None:
            self.streams += 1
            self.session = self.policy.open(self.engine, self.src_lang, self.tgt_lang, f"stream{self.streams}")
        return self.session

    def _emit(self, turns: list[TurnResult]) -> IncrementalOutput:
        if self.settings.turn_log is not None and turns:
            append_turn_log(self.settings.turn_log, self.session.translator.recorder.talk.talk_id, len(self.turns), turns)
        self.turns += turns
        tokens = [u for t in turns for u in turn_units(t.text, self.session.char_level)]
        return IncrementalOutput(tokens, self.tokens_to_string(tokens), [], "")
