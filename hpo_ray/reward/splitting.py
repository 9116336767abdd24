"""Sentence splitting of the hypothesis unit stream by per-language splitter characters.

A sentence ends after a unit whose last character (closing quotes and brackets aside) is a splitter,
unless the next unit is itself only punctuation of that kind ("？！", "…" + "”"), which then joins it.
With the clause-level splitter sets (commas included) this gives the original's clause pieces.
"""

from .units import Units

CLOSERS = "\"'”’」』）)]】》〉»"


def _ends_sentence(token: str, splitters: str) -> bool:
    core = token.rstrip(CLOSERS)
    return bool(core) and core[-1] in splitters


def _only_punctuation(token: str, splitters: str) -> bool:
    return all(ch in splitters or ch in CLOSERS for ch in token)


def split_sentences(units: Units, splitters: str) -> list[Units]:
    """The hypothesis as consecutive sentences (no unit dropped); empty input gives no sentence."""
    tokens = units.tokens
    pieces: list[Units] = []
    start = 0
    last = len(tokens) - 1
    ending = False
    for i, token in enumerate(tokens):
        ending = _ends_sentence(token, splitters) or (ending and _only_punctuation(token, splitters))
        if not ending or (i < last and _only_punctuation(tokens[i + 1], splitters)):
            continue
        pieces.append(units[start : i + 1])
        start = i + 1
    if start <= last:
        pieces.append(units[start:])
    return pieces
