"""What every rollout engine takes and returns (torch engine, vLLM engine).

An engine runs G dialogues per talk: for each turn it appends the next chunk of frames as a user
turn and generates one assistant turn for every live dialogue, until the talk has no chunks left.
Finished trajectories are yielded as soon as their talk ends, so scoring can start at once.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from hpo_ray.config import SamplingConfig
from hpo_ray.dialogue import TurnSpan


@dataclass
class TalkInput:
    """One talk to translate: its frames (already in the LLM's embedding space) and languages.
    `multiplier` = base chunks per turn (`data.multiplier`): a turn's reply budget scales with it."""

    talk_id: str
    group_id: str
    src_lang: str
    tgt_lang: str
    frames: np.ndarray
    turn_frames: int
    max_turns: int | None = None
    multiplier: int = 1

    def turn_sizes(self) -> list[int]:
        """Frames in each user turn (the last one carries the remainder)."""
        n = self.frames.shape[0]
        sizes = [min(self.turn_frames, n - s) for s in range(0, n, self.turn_frames)]
        return sizes if self.max_turns is None else sizes[: self.max_turns]


@dataclass
class Trajectory:
    """One finished dialogue, with everything the reward and the learner need.

    `logprobs[k]` is the log-probability of the k-th assistant token (the k-th True of
    `assistant_mask`) under the engine's sampling distribution: temperature-scaled logits with the
    banned tokens removed, *before* top-p / top-k truncation (see docs/architecture.md).
    """

    talk_id: str
    group_id: str
    sample_index: int
    src_lang: str
    tgt_lang: str
    input_ids: list[int]
    assistant_mask: list[bool]
    placeholder_positions: list[int]
    turns: list[TurnSpan]
    turn_texts: list[str]
    turn_token_ids: list[list[int]]
    logprobs: list[float]
    weight_version: int
    truncated: bool = False
    n_frames: int = 0
    stats: dict = field(default_factory=dict)

    @property
    def num_generated(self) -> int:
        return len(self.logprobs)

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "turns"}
        d["turns"] = [t.__dict__ for t in self.turns]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Trajectory":
        d = dict(d)
        d["turns"] = [TurnSpan(**t) for t in d["turns"]]
        return cls(**d)


@runtime_checkable
class RolloutEngine(Protocol):
    """A generation backend holding one copy of the policy weights; every member is used by a caller
    (rollout worker, evaluation, serving), so callers read them directly instead of probing.

    There is no sleep / wake: nothing frees engine memory between phases (colocated engines keep the
    `rollout.vllm.gpu_memory_utilization` share and the learner the rest; docs/rollout.md).
    """

    weight_version: int
    """The version of the weights last loaded (0: the checkpoint the engine was built from)."""
    max_total_tokens: int
    """The per-dialogue token cap of training rollouts."""
    context: tuple[int, int] | None
    """(max_tokens, keep_tokens) of the bounded inference context, or None (stop at the cap)."""
    stats: dict
    """Running counters since the engine was built (tokens, calls, cache use); JSON-friendly values."""
    loads_whole_state: bool
    """True when a partial `load_weights` is costly, so a weight sync should hand over whole state at once."""

    def generate(self, talks: list[TalkInput], samples_per_talk: int, sampling: SamplingConfig, seed: int) -> Iterator[Trajectory]:
        """Run `samples_per_talk` dialogues for each talk; yield each trajectory when its talk ends."""
        ...

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """Load (HF-named) weights in place, no restart; drop any cached prefixes computed with old weights."""
        ...

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The engine's current weights under HF names (for checksums after a sync)."""
        ...
