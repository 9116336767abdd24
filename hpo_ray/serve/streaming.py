"""One dialogue translated while its frames arrive: each `turn` prefills one user turn on the
persistent KV cache and decodes one assistant turn, nothing recomputed across turns.

It runs the torch engine's own step functions (its cache batch, prefill and turn decoder) on a
batch of one, so a talk fed turn by turn gets exactly what `TorchEngine.generate` writes for it
(greedy, or sampled with the same seed). Every turn reports the tokens it prefilled. With the
engine's bounded context (`rollout.context`, how eval and serving read unbounded talks) the oldest
turns leave the cache when the next one would not fit, and the kept window is re-prefilled once —
the engine's own slide; without it the dialogue stops at `rollout.max_total_tokens`.
"""

from dataclasses import dataclass

import numpy as np
import torch

from hpo_ray.config import SamplingConfig
from hpo_ray.rollout.protocol import TalkInput
from hpo_ray.rollout.recorder import DialogueRecorder
from hpo_ray.rollout.torch_engine import TorchEngine, _Batch


@dataclass(frozen=True)
class TurnResult:
    """What one turn did: the reply ("" = wait); the tokens it prefilled — the user turn plus what the
    cache lacked before it (`carried`: the system prompt, then the previous reply's closing token);
    the tokens it decoded; the cache length after it."""

    text: str
    n_frames: int
    user_tokens: int
    carried: int
    prefilled: int
    decoded: int
    cached: int
    truncated: bool = False
    slid: bool = False  # the context window moved before this turn: `carried` is the kept window


class _FrameBuffer:
    """A talk's frames so far, appended into a buffer grown geometrically (no copy per turn)."""

    def __init__(self, width: int, device: torch.device, dtype: torch.dtype):
        self._buf = torch.zeros(64, width, device=device, dtype=dtype)
        self.size = 0

    def append(self, frames: np.ndarray) -> None:
        n = frames.shape[0]
        if self.size + n > self._buf.shape[0]:
            grown = self._buf.new_zeros(max(2 * self._buf.shape[0], self.size + n), self._buf.shape[1])
            grown[: self.size] = self._buf[: self.size]
            self._buf = grown
        self._buf[self.size : self.size + n] = torch.from_numpy(np.asarray(frames, dtype=np.float32)).to(self._buf)
        self.size += n

    def view(self) -> torch.Tensor:
        return self._buf[: self.size]


class StreamingTranslator:
    """One live dialogue over `engine`'s model: `turn(frames)` → the assistant's reply to that chunk.
    `multiplier` (base chunks per turn, `data.multiplier`) sets each reply's budget, as in `TorchEngine.generate`."""

    def __init__(
        self,
        engine: TorchEngine,
        src_lang: str,
        tgt_lang: str,
        sampling: SamplingConfig,
        seed: int = 0,
        talk_id: str = "stream",
        multiplier: int = 1,
    ):
        self.engine, self.sampling = engine, sampling
        width = engine.model.config.hidden_size
        talk = TalkInput(talk_id, talk_id, src_lang, tgt_lang, np.zeros((0, width), np.float32), 1, multiplier=multiplier)
        cap = engine.max_total_tokens if engine.context is None else engine.context[0]
        self.recorder = DialogueRecorder(engine.layout, talk, 0, cap, sampling.reply_budget(multiplier))
        self.frames = _FrameBuffer(width, engine.device, engine.dtype)
        self.generator = torch.Generator(device=engine.device).manual_seed(seed)
        self._batch = _Batch(1, engine.device)
        self._pending = list(self.recorder.ids)  # tokens not yet in the cache (the system prompt at first)
        self.turns: list[TurnResult] = []

    @property
    def truncated(self) -> bool:
        """Whether the dialogue hit `rollout.max_total_tokens` and stopped (as the engine ends it)."""
        return self.recorder.truncated

    @torch.no_grad()
    def turn(self, frames: np.ndarray) -> TurnResult:
        """Prefill one user turn carrying `frames` ([n, hidden]) and decode the assistant's reply."""
        n = int(frames.shape[0])
        rec = self.recorder
        slid = not rec.truncated and self._slide(n)
        if not rec.truncated and not rec.fits(n):
            rec.truncated = True
        if rec.truncated:  # the engine ends such a dialogue for good; later chunks get no reply
            result = TurnResult("", n, 0, 0, 0, 0, int(self._batch.next_pos[0]), truncated=True)
            self.turns.append(result)
            return result
        self.frames.append(frames)
        stats = self.engine.stats
        before = stats["prefill_tokens"], stats["decode_tokens"]
        carried, user = len(self._pending), rec.add_user_turn(n)
        self._pending += user
        frame_table = {rec.talk.talk_id: self.frames.view()}
        logits = self.engine._forward(self._batch, [self._pending], [rec], frame_table, prefill=True)
        (self._pending,) = self.engine._decode_turn(self._batch, [rec], logits, frame_table, self.sampling, self.generator)
        result = TurnResult(
            self.engine.layout.decode(rec.turn_ids[-1]),
            n,
            len(user),
            carried,
            stats["prefill_tokens"] - before[0],
            stats["decode_tokens"] - before[1],
            int(self._batch.next_pos[0]),
            slid=slid,
        )
        self.turns.append(result)
        return result

    def _slide(self, n_frames: int) -> bool:
        """Bounded context: drop the oldest turns if this one would not fit, and queue the kept window
        for re-prefill at fresh positions (what `TorchEngine.generate` does between turns)."""
        rec, context = self.recorder, self.engine.context
        if context is None or not rec.slide(n_frames, context[1]):
            return False
        self._batch.reset_row(0, rec.window_frame_start())
        self._batch.compact()
        self._pending = rec.context_ids()
        self.engine.stats["context_slides"] += 1
        rec.slid = False
        return True
