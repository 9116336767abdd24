"""The toy language pair: a small SVO source grammar and a reordering target grammar.

Source (English-like):  NP V NP [ADV] [CONJ NP V NP] .      NP = DET [ADJ] NOUN
Target (made-up words): [ADV] V NP NP [CONJ NP NP V] .      NP = DET NOUN [ADJ]
The main clause is verb-initial, a sentence-final source adverb moves to the front, the
subordinate clause is verb-final, adjectives follow nouns, determiners agree with the noun's gender
and polysemous verbs are translated by their object's class. So many target words need source
words heard later, and writing early means guessing. Everything is fixed by `language_seed`.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from hpo_ray.config import SynthConfig

from .lexicon import CONJUNCTIONS, DETERMINERS, Entry, build_lexicon

SENTENCE_END = "."
SILENCE = "<sil>"


@dataclass(frozen=True)
class TargetWord:
    """One target word, its kind, the source word it translates (`primary`) and every source word
    it depends on (`sources`, indices into the sentence's source words, primary included)."""

    text: str
    kind: str
    primary: int
    sources: tuple[int, ...]


@dataclass(frozen=True)
class Sentence:
    """A source sentence with its word-aligned translation. The last target word carries the period."""

    source: tuple[str, ...]
    target: tuple[TargetWord, ...]

    @property
    def source_text(self) -> str:
        return " ".join(self.source) + SENTENCE_END

    @property
    def target_text(self) -> str:
        return " ".join(w.text for w in self.target)


@dataclass(frozen=True)
class _NounPhrase:
    det: int
    adj: int | None
    noun: int


class Language:
    """The language fixed by `language_seed`: lexicon, grammar, translation and frame vectors.

    Lexicon sizes and grammar rates come from `synth` (defaults: `SynthConfig()`); its own
    `language_seed` field is ignored in favour of the argument.
    """

    def __init__(self, language_seed: int, synth: SynthConfig | None = None):
        self.seed = language_seed
        self.synth = synth if synth is not None else SynthConfig()
        self.lexicon: dict[str, Entry] = build_lexicon(language_seed, self.synth)
        self._by_kind: dict[str, list[Entry]] = {}
        for entry in self.lexicon.values():
            self._by_kind.setdefault(entry.kind, []).append(entry)
        self._vectors: dict[tuple[str, int], np.ndarray] = {}

    # --- vocabularies -------------------------------------------------------------------------
    def source_vocabulary(self) -> list[str]:
        """Every source word (no punctuation), in lexicon order."""
        return list(self.lexicon)

    def target_vocabulary(self) -> list[str]:
        """Every target word form, then the sentence-final mark "." (attached to a sentence's last word)."""
        forms: list[str] = []
        for entry in self.lexicon.values():
            forms.extend(f for f in entry.target if f not in forms)
        return forms + [SENTENCE_END]

    # --- frames -------------------------------------------------------------------------------
    def word_vector(self, word: str, dim: int) -> np.ndarray:
        """The fixed frame vector of a source word (or `SILENCE`): depends only on the word,
        `dim` and `language_seed`, so every talk and every `--seed` hears a word the same way."""
        key = (word, dim)
        if key not in self._vectors:
            if word != SILENCE and word not in self.lexicon:
                raise KeyError(f"{word!r} is not a source word of language {self.seed}")
            digest = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, digest, dim]))
            self._vectors[key] = rng.standard_normal(dim).astype(np.float32)
        return self._vectors[key]

    # --- sentences ----------------------------------------------------------------------------
    def sample_sentence(self, rng: np.random.Generator) -> Sentence:
        """Draw one sentence pair from the grammar (rates from the synth config)."""
        s = self.synth
        src: list[str] = []
        subj = self._noun_phrase(rng, src, ("agent",))
        verb = self._add(src, self._pick(rng, ("verb",)).source)
        obj = self._noun_phrase(rng, src, ("agent", "thing"))
        adv = self._add(src, self._pick(rng, ("adv",)).source) if rng.random() < s.adverb_rate else None
        sub = None
        if rng.random() < s.subordinate_rate:
            conj = self._add(src, CONJUNCTIONS[int(rng.integers(len(CONJUNCTIONS)))])
            sub_subj = self._noun_phrase(rng, src, ("agent",))
            sub_verb = self._add(src, self._pick(rng, ("verb",)).source)
            sub = (conj, sub_subj, sub_verb, self._noun_phrase(rng, src, ("agent", "thing")))
        tgt: list[TargetWord] = []
        if adv is not None:
            tgt.append(self._word(src, adv, "adv"))
        tgt.append(self._verb(src, verb, obj))
        tgt += self._np_target(src, subj) + self._np_target(src, obj)
        if sub is not None:
            conj, sub_subj, sub_verb, sub_obj = sub
            tgt.append(self._word(src, conj, "conj"))
            tgt += self._np_target(src, sub_subj) + self._np_target(src, sub_obj)
            tgt.append(self._verb(src, sub_verb, sub_obj))
        last = tgt[-1]
        tgt[-1] = TargetWord(last.text + SENTENCE_END, last.kind, last.primary, last.sources)
        return Sentence(tuple(src), tuple(tgt))

    def wrong_guess(self, word: TargetWord, rng: np.random.Generator) -> str:
        """A plausible but wrong target word of the same kind (what a premature guess may write)."""
        bare = word.text.removesuffix(SENTENCE_END)
        pool = sorted({f for e in self._by_kind[word.kind] for f in e.target} - {bare})
        if not pool:
            return word.text
        guess = pool[int(rng.integers(len(pool)))]
        return guess + (SENTENCE_END if word.text.endswith(SENTENCE_END) else "")

    def describe(self) -> dict:
        """A human-readable summary of the language (written to language.json)."""
        return {
            "language_seed": self.seed,
            "source_grammar": "NP V NP [ADV] [CONJ NP V NP] .  with NP = DET [ADJ] NOUN; subjects are agents",
            "target_grammar": "[ADV] V NP NP [CONJ NP NP V] .  with NP = DET NOUN [ADJ]",
            "reordering": [
                "main clause is verb-initial (the verb moves before its subject)",
                "a sentence-final source adverb moves to the front of the target sentence",
                "subordinate clauses are verb-final",
                "adjectives follow their noun",
            ],
            "ambiguity": [
                "target determiners agree with the gender of the noun that follows them in the source",
                "polysemous verbs translate differently for agent and thing objects",
            ],
            "lexicon": {
                e.source: {"kind": e.kind, "target": list(e.target), **({"gender": e.gender} if e.gender is not None else {})}
                for e in self.lexicon.values()
            },
            "source_vocabulary": self.source_vocabulary(),
            "target_vocabulary": self.target_vocabulary(),
        }

    # --- helpers ------------------------------------------------------------------------------
    def _pick(self, rng: np.random.Generator, kinds: tuple[str, ...]) -> Entry:
        pool = [e for k in kinds for e in self._by_kind[k]]
        return pool[int(rng.integers(len(pool)))]

    @staticmethod
    def _add(src: list[str], word: str) -> int:
        src.append(word)
        return len(src) - 1

    def _noun_phrase(self, rng: np.random.Generator, src: list[str], kinds: tuple[str, ...]) -> _NounPhrase:
        det = self._add(src, DETERMINERS[int(rng.integers(len(DETERMINERS)))])
        adj = self._add(src, self._pick(rng, ("adj",)).source) if rng.random() < self.synth.adjective_rate else None
        return _NounPhrase(det, adj, self._add(src, self._pick(rng, kinds).source))

    def _word(self, src: list[str], i: int, kind: str) -> TargetWord:
        return TargetWord(self.lexicon[src[i]].target[0], kind, i, (i,))

    def _np_target(self, src: list[str], np_: _NounPhrase) -> list[TargetWord]:
        noun = self.lexicon[src[np_.noun]]
        words = [
            TargetWord(self.lexicon[src[np_.det]].target[noun.gender], "det", np_.det, (np_.det, np_.noun)),
            TargetWord(noun.target[0], noun.kind, np_.noun, (np_.noun,)),
        ]
        if np_.adj is not None:
            words.append(self._word(src, np_.adj, "adj"))
        return words

    def _verb(self, src: list[str], verb: int, obj: _NounPhrase) -> TargetWord:
        entry = self.lexicon[src[verb]]
        obj_kind = self.lexicon[src[obj.noun]].kind
        form = entry.target[0 if obj_kind == "agent" else 1]
        return TargetWord(form, "verb", verb, (verb, obj.noun) if entry.polysemous else (verb,))


def later_source_fraction(sentences: list[Sentence]) -> float:
    """Fraction of target words that cannot be written in order until a source word LATER than the
    one they translate has been heard (their own dependencies or an earlier target word's)."""
    later = total = 0
    for sentence in sentences:
        frontier = -1
        for word in sentence.target:
            frontier = max(frontier, *word.sources)
            later += frontier > word.primary
            total += 1
    return later / max(total, 1)
