"""The dialogue layout: token layout round-trips, frames land exactly at placeholders, bans."""

import pytest
import torch

from hpo_ray.dialogue import DialogueLayout, embed


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
        {"role": "user", "content": "<|video_pad|>" * 2}, {"role": "assistant", "content": "ka"},
        {"role": "user", "content": "<|video_pad|>"}, {"role": "assistant", "content": ""},
    ]
    assert tiny_tokenizer.decode(d.input_ids) == tiny_tokenizer.apply_chat_template(msgs, tokenize=False)


def test_masks_and_positions_mark_exactly_generated_tokens_and_placeholders(layout):
    d = layout.build_text("en", "de", [(3, "ka lomi"), (2, "")])
    ids = d.input_ids
    assert [i for i, t in enumerate(ids) if t == layout.placeholder_id] == d.placeholder_positions
    generated = [ids[i] for i, m in enumerate(d.assistant_mask) if m]
    assert generated == layout.assistant_ids("ka lomi") + layout.assistant_ids("")
    for span in d.turns:
        assert ids[span.assistant_end - 1] == layout.end_of_turn_id
        assert all(d.assistant_mask[span.assistant_start:span.assistant_end])
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
    assert torch.equal(out[0, pos], frames[: d.n_frames]) and torch.equal(out[1, pos], frames[d.n_frames:])
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
    banned = set(layout.banned_token_ids())
    assert layout.end_of_turn_id not in banned
    assert {layout.placeholder_id, layout.im_start_id, tiny_tokenizer.pad_token_id} <= banned
    for i in range(len(tiny_tokenizer)):
        if "\n" in tiny_tokenizer.decode([i]):
            assert i in banned


def test_unknown_placeholder_token_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="placeholder_token"):
        DialogueLayout(tiny_tokenizer, placeholder_token="<|audio_pad|>")
