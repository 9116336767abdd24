"""Synthetic toy-SST task: a made-up language pair, rendered as pre-encoded speech features or spoken
by eSpeak NG (`data.synth.speech.enabled`, the optional extra `[speech]`).

    meta = synthesize(cfg, "runs/demo/data")        # manifests, features or audio, SFT dialogues
    Language(cfg.data.synth.language_seed).target_vocabulary()   # e.g. a tokenizer corpus
"""

from .language import SENTENCE_END, SILENCE, Language, Sentence, TargetWord, later_source_fraction
from .render import RenderedTalk, render_talk
from .sft import AlignedTalk, SftDialogue, TalkAlignment, build_dialogue, turn_sizes, word_deadlines
from .spoken import Speaker, SpokenTalk, speak_talks
from .writer import (
    AUDIO_MANIFEST,
    AUDIO_MANIFEST_SCHEMA,
    MANIFEST,
    MANIFEST_SCHEMA,
    SFT_SPLITS,
    SPLITS,
    dialogue_rng,
    split_counts,
    synthesize,
    talk_id,
    talk_rng,
)

__all__ = [
    "AUDIO_MANIFEST",
    "AUDIO_MANIFEST_SCHEMA",
    "AlignedTalk",
    "Language",
    "MANIFEST",
    "MANIFEST_SCHEMA",
    "RenderedTalk",
    "SENTENCE_END",
    "SFT_SPLITS",
    "SILENCE",
    "SPLITS",
    "Sentence",
    "SftDialogue",
    "Speaker",
    "SpokenTalk",
    "TalkAlignment",
    "TargetWord",
    "build_dialogue",
    "dialogue_rng",
    "later_source_fraction",
    "render_talk",
    "speak_talks",
    "split_counts",
    "synthesize",
    "talk_id",
    "talk_rng",
    "turn_sizes",
    "word_deadlines",
]
