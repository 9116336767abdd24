"""Streaming translator: a talk fed turn by turn gets the torch engine's output, and each turn
prefills only the new user turn (plus the previous reply's closing token) on the persistent cache."""

import numpy as np
import pytest

from hpo_ray.config import SamplingConfig
from hpo_ray.rollout.protocol import TalkInput
from hpo_ray.rollout.torch_engine import TorchEngine
from hpo_ray.serve.streaming import StreamingTranslator


def make_talk(n_frames: int, width: int = 64, seed: int = 0) -> TalkInput:
    frames = np.random.default_rng(seed).standard_normal((n_frames, width)).astype(np.float32)
    return TalkInput(f"t{seed}", f"g{seed}", "en", "de", frames, 14)


def stream(engine, talk: TalkInput, sampling: SamplingConfig, seed: int) -> StreamingTranslator:
    translator = StreamingTranslator(engine, talk.src_lang, talk.tgt_lang, sampling, seed, talk.talk_id)
    start = 0
    for size in talk.turn_sizes():
        translator.turn(talk.frames[start : start + size])
        start += size
    return translator


@pytest.mark.parametrize(
    "sampling", [SamplingConfig(greedy=True, max_new_tokens=6), SamplingConfig(max_new_tokens=6)], ids=["greedy", "sampled"]
)
def test_streamed_talk_gets_the_engine_output(tiny_model, layout, sampling):
    for n_frames, seed in ((50, 0), (87, 1)):
        talk = make_talk(n_frames, seed=seed)
        engine = TorchEngine(tiny_model, layout)
        (traj,) = list(engine.generate([talk], 1, sampling, seed))
        translator = stream(TorchEngine(tiny_model, layout), talk, sampling, seed)
        assert [t.text for t in translator.turns] == traj.turn_texts
        assert translator.recorder.ids == traj.input_ids
        assert translator.recorder.logprobs == pytest.approx(traj.logprobs, abs=1e-6)
        assert [t.n_frames for t in translator.turns] == talk.turn_sizes()


@pytest.mark.parametrize("replies", ["cut_at_the_cap", "waits"])
def test_each_turn_prefills_only_the_new_user_turn(tiny_model, layout, replies):
    talk = make_talk(100, seed=2)
    engine = TorchEngine(tiny_model, layout)
    if replies == "waits":  # only <|im_end|> may be written: every reply closes itself at once
        engine.banned = engine.banned.clone().fill_(True)
        engine.banned[layout.end_of_turn_id] = False
    translator = stream(engine, talk, SamplingConfig(greedy=True, max_new_tokens=3), seed=0)
    assert all(s.truncated == (replies == "cut_at_the_cap") for s in translator.recorder.spans)
    rec = translator.recorder
    carried = len(layout.system_ids("en", "de"))  # what the cache lacks before turn 0
    for k, (turn, span) in enumerate(zip(translator.turns, rec.spans)):
        assert turn.user_tokens == len(layout.user_ids(turn.n_frames, first=k == 0)) and turn.carried == carried, f"turn {k}"
        assert turn.prefilled == turn.carried + turn.user_tokens, f"turn {k}"
        # every token entered the cache once, except the reply's last one (and the <|im_end|>
        # appended to a reply cut at max_new_tokens): those are fed with the next user turn
        assert turn.cached == span.assistant_end - 1, f"turn {k}"
        carried = 1 + span.truncated
    assert engine.stats["prefill_tokens"] + engine.stats["decode_tokens"] == translator.turns[-1].cached
    assert engine.stats["forward_calls"] == sum(1 + t.decoded for t in translator.turns)
    assert translator.turns[-1].cached == len(rec.ids) - carried


def test_dialogue_at_the_token_cap_stops_like_the_engine(tiny_model, layout):
    talk = make_talk(160, seed=3)
    sampling = SamplingConfig(greedy=True, max_new_tokens=4)
    (traj,) = list(TorchEngine(tiny_model, layout, max_total_tokens=200).generate([talk], 1, sampling, 0))
    translator = stream(TorchEngine(tiny_model, layout, max_total_tokens=200), talk, sampling, 0)
    assert traj.truncated and translator.truncated
    live = [t for t in translator.turns if not t.truncated]
    assert [t.text for t in live] == traj.turn_texts and len(live) < len(talk.turn_sizes())
    assert all(t.truncated and t.prefilled == 0 and t.text == "" for t in translator.turns[len(live) :])


def test_bounded_context_slides_like_the_engine_and_reprefills_only_the_kept_window(tiny_model, layout):
    talk = make_talk(200, seed=4)
    sampling = SamplingConfig(greedy=True, max_new_tokens=4)
    (traj,) = list(TorchEngine(tiny_model, layout, context=(150, 90)).generate([talk], 1, sampling, 0))
    engine = TorchEngine(tiny_model, layout, context=(150, 90))
    translator = stream(engine, talk, sampling, 0)
    assert [t.text for t in translator.turns] == traj.turn_texts and not translator.truncated
    slid = [k for k, t in enumerate(translator.turns) if t.slid]
    assert slid and engine.stats["context_slides"] == len(slid) == traj.stats["context_slides"]
    rec = translator.recorder
    for k in slid:  # the cache restarts: system prompt + kept turns, then this user turn, nothing else
        turn = translator.turns[k]
        kept = rec.n_system + rec.spans[k].user_start - rec.window_starts[k]
        assert turn.carried == kept and turn.prefilled == kept + turn.user_tokens
        assert turn.cached == turn.prefilled + turn.decoded
    assert all(t.cached <= 150 for t in translator.turns)
