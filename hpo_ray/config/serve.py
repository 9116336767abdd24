"""The simulstream speech-processor YAML of an hpo-ray policy (`simulstream_inference`, `simulstream_server`).

simulstream reads `type` (our processor class) and `speech_chunk_size`; its log reader and
OmniSTEval's `--simulstream_config_file` read `detokenizer_type` and `latency_unit`. Everything
else (dialogue layout, turn size, token cap) comes from the hpo-ray run config named by `config`,
so a policy streams exactly as `hpo-ray eval` runs it.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat

from .base import Section
from .rollout import SamplingConfig

PROCESSOR_TYPE = "hpo_ray.serve.simulstream_processor.HpoRaySpeechProcessor"


class StreamProcessorConfig(Section):
    """One speech processor: the speech LLM, how audio is cut, how replies are decoded."""

    type: str = PROCESSOR_TYPE
    checkpoint: Path | None = None  # speech LLM directory (HF LLM + speech_encoder/); None: model.path
    config: Path | None = None  # hpo-ray run config (defaults when None), relative to the working directory
    overrides: list[str] = Field(default_factory=list)  # dotted overrides of that config
    speech_chunk_size: PositiveFloat | None = None  # seconds of audio per processing call; None: data.turn_seconds
    latency_unit: Literal["word", "char"] = "word"  # must be the unit the target language is scored in
    detokenizer_type: Literal["simuleval"] = "simuleval"  # emitted tokens are the latency units
    src_lang: str = "en"  # defaults; a client's source_lang / target_lang metadata wins
    tgt_lang: str = "de"
    sampling: SamplingConfig | None = None  # None: the run config's rollout.validation_sampling (greedy)
    seed: int = 0  # sampling seed of each stream
    device: Literal["auto", "cpu", "cuda"] | None = None  # None: rollout.device
    turn_log: Path | None = None  # JSONL, one line per turn: frames, tokens prefilled/decoded, cache length
