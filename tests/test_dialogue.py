"""The dialogue layout: token layout round-trips, frames land exactly at placeholders, bans."""

import copy

import numpy as np
import pytest
import torch

from hpo_ray.config import SamplingConfig
from hpo_ray.dialogue import DialogueLayout, embed
from hpo_ray.model.tokenizer import CHAT_TEMPLATE
from hpo_ray.rollout.protocol import TalkInput
from hpo_ray.rollout.torch_engine import TorchEngine

# The original HPO code's RL layout: "\n" before the first user turn only, none between later turns.
FIRST_NEWLINE_ONLY_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ '<|im_start|>system\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% elif m['role'] == 'user' %}{{ '<|im_start|>user\\n' + m['content'] + '<|im_end|>\\n<|im_start|>assistant\\n' }}"
    "{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}"
    "{% endfor %}"
)
TEMPLATES = {"newline_between_turns": CHAT_TEMPLATE, "newline_before_first_user_only": FIRST_NEWLINE_ONLY_TEMPLATE}


def with_template(tokenizer, template):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def test_layout_round_trips_through_parse(layout):
    turns = [(14, "ka lomi"), (14, ""), (9, "teru sa .")]
    d = layout.build_text("en", "de", turns)
    system, parsed = layout.parse(d.input_ids)
    assert system == layout.system_ids("en", "de")
    assert [(n, layout.decode(ids)) for n, ids in parsed] == turns
    assert layout.build("en", "de", parsed).input_ids == d.input_ids


def test_layout_matches_the_chat_template_text(layout, tiny_tokenizer):
    d = layout.build_text("en", "de", [(2, "ka"), (1, "")])
    msgs = [
        {"role": "system", "content": "Translate the following speech from English to German."},
        {"role": "user", "content": "<|video_pad|>" * 2},
        {"role": "assistant", "content": "ka"},
        {"role": "user", "content": "<|video_pad|>"},
        {"role": "assistant", "content": ""},
    ]
    assert tiny_tokenizer.decode(d.input_ids) == tiny_tokenizer.apply_chat_template(msgs, tokenize=False)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_layout_follows_the_separators_the_chat_template_renders(name, tiny_tokenizer, tiny_model):
    tok = with_template(tiny_tokenizer, TEMPLATES[name])
    layout = DialogueLayout(tok)
    turns = [(2, "ka"), (1, ""), (3, "lomi .")]
    d = layout.build_text("en", "de", turns)
    msgs = [{"role": "system", "content": "Translate the following speech from English to German."}]
    for n, text in turns:
        msgs += [{"role": "user", "content": "<|video_pad|>" * n}, {"role": "assistant", "content": text}]
    rendered = tok.apply_chat_template(msgs, tokenize=False)
    assert tok.decode(d.input_ids) == rendered
    assert ("<|im_end|>\n<|im_start|>user" in rendered.split("<|im_end|>", 1)[1]) == (name == "newline_between_turns")
    assert layout.build("en", "de", layout.parse(d.input_ids)[1]).input_ids == d.input_ids
    rng = np.random.default_rng(0)
    talk = TalkInput("t0", "g0", "en", "de", rng.standard_normal((40, 64)).astype(np.float32), 14)
    (traj,) = TorchEngine(tiny_model, layout).generate([talk], 1, SamplingConfig(max_new_tokens=4), seed=0)
    rebuilt = layout.build("en", "de", [(s.n_frames, ids) for s, ids in zip(traj.turns, traj.turn_token_ids)])
    assert rebuilt.input_ids == traj.input_ids and rebuilt.placeholder_positions == traj.placeholder_positions


def test_a_tokenizer_without_a_chat_template_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="chat_template"):
        DialogueLayout(with_template(tiny_tokenizer, None))


def test_masks_and_positions_mark_exactly_generated_tokens_and_placeholders(layout):
    d = layout.build_text("en", "de", [(3, "ka lomi"), (2, "")])
    ids = d.input_ids
    assert [i for i, t in enumerate(ids) if t == layout.placeholder_id] == d.placeholder_positions
    generated = [ids[i] for i, m in enumerate(d.assistant_mask) if m]
    assert generated == layout.assistant_ids("ka lomi") + layout.assistant_ids("")
    for span in d.turns:
        assert ids[span.assistant_end - 1] == layout.end_of_turn_id
        assert all(d.assistant_mask[span.assistant_start : span.assistant_end])
    assert d.turns[-1].assistant_end == len(ids)  # no trailing unused user turn


def test_truncated_reply_is_closed_outside_the_assistant_mask(layout):
    reply = layout.encode("ka lomi")  # cut at the token cap: no <|im_end|>
    d = layout.build("en", "de", [(2, reply), (2, layout.assistant_ids(""))])
    assert d.turns[0].truncated and not d.turns[1].truncated
    end = d.turns[0].assistant_end
    assert d.input_ids[end] == layout.end_of_turn_id and not d.assistant_mask[end]


def test_embed_places_frames_exactly_at_placeholders_and_nowhere_else(tiny_model, layout):
    d = layout.build_text("en", "de", [(4, "ka"), (3, "")])
    ids = torch.tensor([d.input_ids, d.input_ids])
    frames = torch.randn(2 * d.n_frames, tiny_model.config.hidden_size)
    table = tiny_model.get_input_embeddings()
    out = embed(table, ids, frames, layout.placeholder_id)
    plain = table(ids)
    pos = torch.tensor(d.placeholder_positions)
    assert torch.equal(out[0, pos], frames[: d.n_frames]) and torch.equal(out[1, pos], frames[d.n_frames :])
    keep = torch.ones(len(d.input_ids), dtype=torch.bool)
    keep[pos] = False
    assert torch.equal(out[:, keep], plain[:, keep])


def test_embed_rejects_a_frame_count_that_does_not_match(tiny_model, layout):
    d = layout.build_text("en", "de", [(4, "ka")])
    with pytest.raises(ValueError, match="fill 4 placeholders"):
        embed(tiny_model.get_input_embeddings(), torch.tensor([d.input_ids]), torch.randn(3, 64), layout.placeholder_id)


def test_embed_uses_the_live_embedding_table(tiny_model, layout):
    d = layout.build_text("en", "de", [(2, "ka")])
    ids = torch.tensor([d.input_ids])
    table = tiny_model.get_input_embeddings()
    out = embed(table, ids, torch.zeros(2, 64), layout.placeholder_id)
    out.sum().backward()
    assert table.weight.grad is not None and table.weight.grad[ids[0, 0]].abs().sum() > 0
    table.weight.grad = None


def test_banned_ids_cover_newlines_and_specials_but_not_end_of_turn(layout, tiny_tokenizer):
    banned = set(layout.banned_token_ids(len(tiny_tokenizer)))
    assert layout.end_of_turn_id not in banned
    assert {layout.placeholder_id, layout.im_start_id, tiny_tokenizer.pad_token_id} <= banned
    for i in range(len(tiny_tokenizer)):
        if "\n" in tiny_tokenizer.decode([i]):
            assert i in banned


def test_unknown_placeholder_token_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="placeholder_token"):
        DialogueLayout(tiny_tokenizer, placeholder_token="<|audio_pad|>")
