"""Synthetic toy-SST task: a made-up language pair rendered as pre-encoded speech features.

    meta = synthesize(cfg, "runs/demo/data")        # manifests, features, SFT dialogues
    Language(cfg.data.synth.language_seed).target_vocabulary()   # e.g. a tokenizer corpus
"""

from .language import SENTENCE_END, SILENCE, Language, Sentence, TargetWord, later_source_fraction
from .render import RenderedTalk, render_talk
from .sft import SftDialogue, build_dialogue, turn_sizes, word_deadlines
from .writer import MANIFEST_SCHEMA, SFT_SPLITS, SPLITS, dialogue_rng, split_counts, synthesize, talk_id, talk_rng

__all__ = [
    "Language", "MANIFEST_SCHEMA", "RenderedTalk", "SENTENCE_END", "SFT_SPLITS", "SILENCE", "SPLITS", "Sentence",
    "SftDialogue", "TargetWord", "build_dialogue", "dialogue_rng", "later_source_fraction", "render_talk",
    "split_counts", "synthesize", "talk_id", "talk_rng", "turn_sizes", "word_deadlines",
]
