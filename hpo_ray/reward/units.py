"""Units (whitespace words, or characters for zh/ja) paired with the delay at which each was written.

A `Units` run is the only way text travels through the reward: slicing and concatenating keep every
unit with its delay, so delays can never drift from their words (docs/method.md §11.4).
"""

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Units:
    """Units with their delays (seconds from talk start) and whether whitespace preceded each one."""

    tokens: tuple[str, ...]
    delays: tuple[float, ...]
    spaced: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: slice) -> "Units":
        return Units(self.tokens[index], self.delays[index], self.spaced[index])

    def text(self) -> str:
        """The units as text: a space wherever the original text had whitespace before a unit."""
        out: list[str] = []
        for i, (token, spaced) in enumerate(zip(self.tokens, self.spaced)):
            if i and spaced:
                out.append(" ")
            out.append(token)
        return "".join(out)

    @staticmethod
    def concat(runs: Sequence["Units"]) -> "Units":
        """One run holding `runs` in order."""
        tokens: list[str] = []
        delays: list[float] = []
        spaced: list[bool] = []
        for run in runs:
            tokens.extend(run.tokens)
            delays.extend(run.delays)
            spaced.extend(run.spaced)
        return Units(tuple(tokens), tuple(delays), tuple(spaced))


EMPTY = Units((), (), ())


def units_from_turns(turns: Sequence[str], chunk_seconds: float, char_level: bool, talk_seconds: float | None = None) -> Units:
    """The hypothesis of a rollout: units of `turns[k]` carry delay (k+1)·chunk_seconds, capped at
    `talk_seconds` when given (a talk's last turn may hold less than a full chunk).

    Word languages: a turn boundary is a word boundary (turns are joined by a space, as the
    original). Character languages: turns are concatenated and whitespace is not a unit.
    """
    tokens: list[str] = []
    delays: list[float] = []
    spaced: list[bool] = []
    after_space = False
    for k, turn in enumerate(turns):
        delay = (k + 1) * chunk_seconds if talk_seconds is None else min((k + 1) * chunk_seconds, talk_seconds)
        if not char_level:
            words = turn.split()
            tokens.extend(words)
            delays.extend([delay] * len(words))
            spaced.extend([True] * len(words))
            continue
        for ch in turn:
            if ch.isspace():
                after_space = True
                continue
            tokens.append(ch)
            delays.append(delay)
            spaced.append(after_space)
            after_space = False
    return Units(tuple(tokens), tuple(delays), tuple(spaced))


def units_of_text(text: str, char_level: bool) -> Units:
    """Units of a reference or source sentence (delays 0: they were never written by the model)."""
    if not char_level:
        words = text.split()
        return Units(tuple(words), (0.0,) * len(words), (True,) * len(words))
    return units_from_turns([text], 0.0, True)
