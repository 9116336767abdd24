"""eSpeak NG through ctypes — the only module that loads it (GPL-3, optional extra `[speech]`).

The wheel `espeakng-loader` ships `libespeak-ng.so` and its voice data, so nothing comes from the
system. The engine keeps state between utterances (pitch flutter, wave phase, a noise generator),
and none of it can be reset: an utterance is reproducible only when spoken by a freshly loaded
engine with the same history, hence one seeded engine per process (`ESpeak` refuses a second).
"""

import ctypes
import importlib
from dataclasses import dataclass

import numpy as np

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH = 1, 2, 3
VOLUME = 70  # of 100: peaks stay near 2/3 of full scale, headroom for the resampler's overshoot and for noise
RATE_RANGE = (80, 450)  # espeakRATE_MINIMUM/MAXIMUM, words per minute
PITCH_RANGE = (0, 99)
INSTALL_HINT = "pip install 'hpo-ray[speech]' (eSpeak NG via espeakng-loader, GPL-3)"


class SpeechEngineMissing(RuntimeError):
    """The optional extra `[speech]` is not installed."""


class SpeechError(RuntimeError):
    """eSpeak NG refused a voice or its word events do not match the words spoken."""


class _Event(ctypes.Structure):
    """`espeak_EVENT` on LP64: 6 ints (enum, unsigned, 4 ints), then a pointer and an 8-byte union at offsets 24 and 32."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class WordEvent:
    """One `espeakEVENT_WORD`: 1-based character position and length in the text, the sample it
    starts at (engine rate) and `audio_position` (the same instant in whole milliseconds)."""

    text_position: int
    length: int
    sample: int
    audio_position_ms: int


@dataclass(frozen=True)
class Utterance:
    """The engine's int16 PCM of one text at `sample_rate` and one word event per spoken word."""

    pcm: np.ndarray
    sample_rate: int
    words: tuple[WordEvent, ...]


def require() -> object:
    """The `espeakng_loader` module, or a clear error naming the extra to install."""
    try:
        return importlib.import_module("espeakng_loader")
    except ImportError:
        raise SpeechEngineMissing(f"spoken talks need eSpeak NG: {INSTALL_HINT}") from None


def missing_reason() -> str | None:
    """Why eSpeak NG cannot be used here (for test skips), or None when it can."""
    try:
        require()
    except SpeechEngineMissing as exc:
        return str(exc)
    return None


_engine_loaded = False


class ESpeak:
    """The process's eSpeak NG engine in synchronous mode, its random generator seeded with `seed`."""

    def __init__(self, seed: int):
        global _engine_loaded
        if _engine_loaded:
            raise RuntimeError(
                "eSpeak NG is already loaded in this process and its state cannot be reset; speak each talk in a fresh process"
            )
        loader = require()
        self._lib = lib = ctypes.CDLL(loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise SpeechError(f"espeak_Initialize failed ({self.sample_rate}) with data {loader.get_data_path()}")
        _engine_loaded = True
        self.version = lib.espeak_Info(None).decode()
        self.voice = "<default>"
        self._pcm: list[np.ndarray] = []
        self._events: list[WordEvent] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library holds only the pointer
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_ng_SetRandSeed(seed)

    def set_voice(self, name: str, rate: int, pitch: int) -> None:
        """Select voice `name` (e.g. "en-us", "en-gb-x-rp+f3") at `rate` words per minute and base `pitch` 0..99."""
        if self._lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise SpeechError(
                f"eSpeak NG has no voice {name!r} (names are voice files, e.g. en, en-us, en-gb-x-rp, "
                "optionally +variant such as +f2 or +m3)"
            )
        settings = ((_PARAM_RATE, rate, RATE_RANGE), (_PARAM_PITCH, pitch, PITCH_RANGE), (_PARAM_VOLUME, VOLUME, (0, 200)))
        for param, value, valid in settings:
            if not valid[0] <= value <= valid[1] or self._lib.espeak_SetParameter(param, value, 0) != 0:
                raise SpeechError(f"eSpeak NG refused parameter {param}={value} (valid {valid})")
        self.voice = name

    def speak(self, text: str, words: tuple[str, ...]) -> Utterance:
        """Speak `text`, whose words are `words`; fails loudly unless there is exactly one word event per word."""
        self._pcm, self._events = [], []
        data = text.encode("utf-8")
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0 or self._lib.espeak_Synchronize() != 0:
            raise SpeechError(f"espeak_Synth failed ({status}) on {text!r} (voice {self.voice})")
        events = tuple(self._events)
        heard = [text[e.text_position - 1 : e.text_position - 1 + e.length] for e in events]
        if heard != list(words):
            raise SpeechError(
                f"eSpeak NG (voice {self.voice}) gave {len(events)} word events {heard} for the {len(words)} words of {text!r}"
            )
        pcm = np.concatenate(self._pcm) if self._pcm else np.zeros(0, np.int16)
        return Utterance(pcm, self.sample_rate, events)

    def _collect(self, wav, n: int, events) -> int:
        if wav and n > 0:
            self._pcm.append(np.ctypeslib.as_array(wav, (n,)).astype(np.int16, copy=True))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_WORD:
                self._events.append(WordEvent(e.text_position, e.length, e.sample, e.audio_position))
            i += 1
        return 0
