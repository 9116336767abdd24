"""The toy language's lexicon: English-like source words and made-up target words, fixed by a seed.

Source words come from small fixed pools; `language_seed` picks which are used, invents every
target word with a syllable generator, gives each noun a grammatical gender (the target
determiner agrees with it) and makes some verbs polysemous (their translation depends on
whether the object is an agent or a thing).
"""

from dataclasses import dataclass

import numpy as np

from hpo_ray.config import ConfigError, SynthConfig

SOURCE_POOLS: dict[str, tuple[str, ...]] = {
    "agent": (
        "man",
        "woman",
        "child",
        "teacher",
        "doctor",
        "farmer",
        "dog",
        "cat",
        "bird",
        "horse",
        "king",
        "girl",
        "boy",
        "baker",
        "singer",
        "pilot",
        "sailor",
        "student",
        "judge",
        "fox",
    ),
    "thing": (
        "apple",
        "book",
        "car",
        "house",
        "letter",
        "song",
        "bread",
        "ball",
        "cup",
        "door",
        "box",
        "lamp",
        "coat",
        "ship",
        "stone",
        "key",
        "chair",
        "map",
        "clock",
        "bottle",
    ),
    "adj": (
        "big",
        "small",
        "red",
        "old",
        "young",
        "happy",
        "green",
        "quiet",
        "strange",
        "warm",
        "dark",
        "bright",
        "heavy",
        "slow",
        "tired",
        "clever",
    ),
    "verb": (
        "sees",
        "takes",
        "finds",
        "likes",
        "holds",
        "calls",
        "follows",
        "watches",
        "helps",
        "carries",
        "knows",
        "meets",
        "wants",
        "paints",
        "draws",
        "needs",
        "visits",
        "pushes",
    ),
    "adv": ("today", "yesterday", "again", "often", "sometimes", "now", "later", "tonight", "rarely"),
}
DETERMINERS = ("the", "a", "this")
CONJUNCTIONS = ("because", "while", "when")
SIZE_FIELDS = {"agent": "agent_nouns", "thing": "thing_nouns", "adj": "adjectives", "verb": "verbs", "adv": "adverbs"}
GENDERS = 2

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sch", "br", "kl", "st")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "u", "ei", "au")
_CODAS = ("", "", "", "n", "r", "s", "l", "t", "m")
# Syllables per target word, by word kind (determiners short, adverbs long).
_SYLLABLES = {"det": (1, 1), "conj": (2, 2), "agent": (2, 2), "thing": (2, 2), "adj": (2, 2), "verb": (2, 3), "adv": (2, 3)}


@dataclass(frozen=True)
class Entry:
    """One source word and its translation(s).

    `target` holds one form, except: determiners have one form per noun gender, and verbs have
    (form with an agent object, form with a thing object), equal unless the verb is polysemous.
    """

    source: str
    kind: str  # det, conj, agent, thing, adj, verb, adv
    target: tuple[str, ...]
    gender: int | None = None  # nouns only

    @property
    def polysemous(self) -> bool:
        return self.kind == "verb" and self.target[0] != self.target[1]


class _SyllableGenerator:
    """Invents pronounceable target words, never repeating one and never equal to a source word."""

    def __init__(self, rng: np.random.Generator, taken: set[str]):
        self.rng, self.taken = rng, set(taken)

    def word(self, kind: str) -> str:
        lo, hi = _SYLLABLES[kind]
        for _ in range(10_000):
            n = int(self.rng.integers(lo, hi + 1))
            parts = [self._pick(_ONSETS) + self._pick(_VOWELS) + (self._pick(_CODAS) if k == n - 1 else "") for k in range(n)]
            word = "".join(parts)
            if word not in self.taken:
                self.taken.add(word)
                return word
        raise RuntimeError(f"syllable generator exhausted for {kind}")

    def _pick(self, options: tuple[str, ...]) -> str:
        return options[int(self.rng.integers(len(options)))]


def build_lexicon(language_seed: int, synth: SynthConfig) -> dict[str, Entry]:
    """Every source word of the language → its entry, deterministic in `language_seed` and the sizes."""
    rng = np.random.default_rng(np.random.SeedSequence([language_seed, 0x1E71C0]))
    chosen: dict[str, list[str]] = {}
    for kind, pool in SOURCE_POOLS.items():
        field = SIZE_FIELDS[kind]
        size = getattr(synth, field)
        if size > len(pool):
            raise ConfigError(f"data.synth.{field}", f"{size} words asked, the {kind} pool has {len(pool)}")
        picks = sorted(int(i) for i in rng.choice(len(pool), size=size, replace=False))
        chosen[kind] = [pool[i] for i in picks]
    all_source = {w for words in chosen.values() for w in words} | set(DETERMINERS) | set(CONJUNCTIONS)
    gen = _SyllableGenerator(rng, all_source)
    lexicon: dict[str, Entry] = {}
    for det in DETERMINERS:
        lexicon[det] = Entry(det, "det", tuple(gen.word("det") for _ in range(GENDERS)))
    for conj in CONJUNCTIONS:
        lexicon[conj] = Entry(conj, "conj", (gen.word("conj"),))
    for kind in ("agent", "thing"):
        for noun in chosen[kind]:
            lexicon[noun] = Entry(noun, kind, (gen.word(kind),), gender=int(rng.integers(GENDERS)))
    for adj in chosen["adj"]:
        lexicon[adj] = Entry(adj, "adj", (gen.word("adj"),))
    n_poly = round(synth.polysemous_verb_fraction * len(chosen["verb"]))
    poly = {int(i) for i in rng.choice(len(chosen["verb"]), size=n_poly, replace=False)}
    for i, verb in enumerate(chosen["verb"]):
        with_agent = gen.word("verb")
        lexicon[verb] = Entry(verb, "verb", (with_agent, gen.word("verb") if i in poly else with_agent))
    for adv in chosen["adv"]:
        lexicon[adv] = Entry(adv, "adv", (gen.word("adv"),))
    return lexicon
