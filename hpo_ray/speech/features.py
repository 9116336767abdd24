"""Audio (float32 in [-1, 1], 16 kHz mono) → log-mel frames, each computed from past samples only.

Built on transformers' audio utilities: its Hann window and Slaney mel filter bank, applied to all
frames in one vectorised rFFT (equal to its per-frame `spectrogram` loop, ~10x faster). Frame i
covers the window that *ends* at sample hop·(i+1): the signal is left-padded by window − hop samples
and framed without centring, so a frame never reaches past its own hop. The log scale is fixed (no
per-utterance maximum, unlike Whisper's extractor), so a frame does not depend on later audio either.
"""

import numpy as np
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

# log10 power floored at 1e-10, then mapped to roughly [-1.5, 1.5] (Whisper's offset and scale).
_MEL_FLOOR, _LOG_OFFSET, _LOG_SCALE = 1e-10, 4.0, 4.0


class LogMel:
    """Causal log-mel front end: `frames(context + samples)` for streaming, `talk(samples)` for a whole talk."""

    def __init__(self, sample_rate: int, n_mels: int, window_samples: int, hop_samples: int):
        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.window_samples, self.hop_samples = window_samples, hop_samples
        self.context_samples = window_samples - hop_samples
        self.window = window_function(window_samples, "hann")
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=window_samples // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=sample_rate / 2,
            sampling_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )

    @property
    def silence(self) -> float:
        """The value every bin takes on digital silence (used to pad feature batches)."""
        return (np.log10(_MEL_FLOOR) + _LOG_OFFSET) / _LOG_SCALE

    def frames(self, samples: np.ndarray) -> np.ndarray:
        """[n, n_mels] float32 for `samples` = context_samples of earlier audio + n whole hops."""
        n = (len(samples) - self.context_samples) // self.hop_samples
        if n <= 0:
            return np.zeros((0, self.n_mels), np.float32)
        x = np.asarray(samples[: self.context_samples + n * self.hop_samples], dtype=np.float64)
        windows = np.lib.stride_tricks.sliding_window_view(x, self.window_samples)[:: self.hop_samples]
        power = np.abs(np.fft.rfft(windows * self.window, axis=1)) ** 2
        mel = np.log10(np.maximum(power @ self.mel_filters, _MEL_FLOOR))
        return ((mel + _LOG_OFFSET) / _LOG_SCALE).astype(np.float32)

    def reference_frames(self, samples: np.ndarray) -> np.ndarray:
        """The same frames through transformers' own `spectrogram` (slow; the tests compare the two)."""
        n = (len(samples) - self.context_samples) // self.hop_samples
        x = np.asarray(samples[: self.context_samples + n * self.hop_samples], dtype=np.float64)
        spec = spectrogram(
            x,
            self.window,
            frame_length=self.window_samples,
            hop_length=self.hop_samples,
            power=2.0,
            center=False,
            mel_filters=self.mel_filters,
            mel_floor=_MEL_FLOOR,
            log_mel="log10",
            dtype=np.float64,
        )
        return ((spec.T + _LOG_OFFSET) / _LOG_SCALE).astype(np.float32)

    def talk(self, samples: np.ndarray) -> np.ndarray:
        """Frames of a whole signal (whole hops only): what streaming the same samples produces."""
        return self.frames(np.concatenate([np.zeros(self.context_samples, np.float64), np.asarray(samples, np.float64)]))
