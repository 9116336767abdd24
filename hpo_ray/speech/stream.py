"""`EncoderStream`: encode one talk as its audio arrives, chunk by chunk, with the encoder's state.

`push(samples)` returns the frames of every chunk the new samples complete (none of a chunk before
all of its audio is there); `flush()` pads the last partial chunk with silence and returns the
frames that cover real audio, so a talk of n samples gives ceil(n / samples-per-frame) frames.
"""

import math

import numpy as np
import torch

from .encoder import ChunkCausalEncoder
from .features import LogMel


class EncoderStream:
    """Streaming state of one talk: pending samples, the mel window's past samples, the encoder state."""

    def __init__(self, encoder: ChunkCausalEncoder):
        c = encoder.config
        self.encoder, self.chunk_samples = encoder, c.chunk_samples
        self.frame_samples = c.hop_samples * c.subsampling
        self.front = LogMel(c.sample_rate, c.n_mels, c.window_samples, c.hop_samples)
        self.pending = np.zeros(0, np.float32)
        self.past = np.zeros(self.front.context_samples, np.float32)
        self.state = encoder.initial_state()
        self.closed = False

    @property
    def width(self) -> int:
        return self.encoder.config.llm_hidden_size

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add mono float samples in [-1, 1]; returns [n_new_frames, llm_hidden] float32 (maybe 0 rows)."""
        if self.closed:
            raise RuntimeError("EncoderStream.push after flush(): start a new stream per talk")
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"push takes 1-D mono samples, got shape {samples.shape}")
        if not np.isfinite(samples).all():
            raise ValueError("push got NaN/inf samples")
        self.pending = np.concatenate([self.pending, samples])
        out = []
        while len(self.pending) >= self.chunk_samples:
            out.append(self._chunk(self.pending[: self.chunk_samples]))
            self.pending = self.pending[self.chunk_samples :]
        return np.concatenate(out) if out else np.zeros((0, self.width), np.float32)

    def flush(self) -> np.ndarray:
        """End of audio: the frames of the last partial chunk (zero-padded), then the stream is closed."""
        if self.closed:
            raise RuntimeError("EncoderStream.flush called twice")
        self.closed = True
        n = math.ceil(len(self.pending) / self.frame_samples)
        if n == 0:
            return np.zeros((0, self.width), np.float32)
        padded = np.zeros(self.chunk_samples, np.float32)
        padded[: len(self.pending)] = self.pending
        return self._chunk(padded)[:n]

    def _chunk(self, samples: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self.past, samples])
        self.past = audio[len(audio) - self.front.context_samples :]
        mel = torch.from_numpy(self.front.frames(audio))[None]
        param = next(self.encoder.parameters())
        with torch.no_grad():
            frames, self.state = self.encoder.step(mel.to(param.device, param.dtype), self.state)
        return frames[0].float().cpu().numpy()


def encode_samples(encoder: ChunkCausalEncoder, samples: np.ndarray) -> np.ndarray:
    """A whole talk's frames: exactly what streaming the samples in any pieces gives."""
    stream = EncoderStream(encoder)
    return np.concatenate([stream.push(samples), stream.flush()])
