"""The learner's policy logprobs: a micro-batch without padding runs with no attention mask (SDPA's causal
kernel), and gives the same logprobs as the masked computation and as the same row inside a padded batch."""

import numpy as np
import pytest
import torch

from hpo_ray.config import TinyModelConfig
from hpo_ray.dialogue import embed
from hpo_ray.learner.batch import SequenceItem, collate, token_logprobs
from hpo_ray.model.build import tiny_model_config
from hpo_ray.rollout.sampling import policy_ban_mask


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    hf = tiny_model_config(TinyModelConfig(), len(tiny_tokenizer), tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(hf, dtype=torch.float32).eval()


def items(layout, tmp_path, turns_of):
    out = []
    for k, turns in enumerate(turns_of):
        d = layout.build_text("en", "de", turns)
        path = tmp_path / f"f{k}.npy"
        np.save(path, np.random.default_rng(k).standard_normal((d.n_frames, 64)).astype(np.float32))
        out.append(SequenceItem(d.input_ids, d.assistant_mask, [0.0] * sum(d.assistant_mask[1:]), 1.0, str(path), None, d.n_frames))
    return out


def test_unpadded_micro_batch_logprobs_equal_the_masked_ones_and_its_row_in_a_padded_batch(
    model, layout, tiny_tokenizer, tmp_path, monkeypatch
):
    long, short = items(layout, tmp_path, [[(5, "ka lomi"), (4, ""), (6, "teru sa .")], [(3, "ka"), (2, "")]])
    banned = policy_ban_mask(layout, len(tiny_tokenizer))
    pad = tiny_tokenizer.pad_token_id
    alone = collate([long, short], [0], pad)
    assert bool(alone.attention_mask.all())
    seen = []
    forward = type(model).forward

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("attention_mask"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    with torch.no_grad():
        lp_alone, _ = token_logprobs(model, alone, layout.placeholder_id, banned, 1.0)
        padded = collate([long, short], [0, 1], pad)
        lp_padded, _ = token_logprobs(model, padded, layout.placeholder_id, banned, 1.0)
    assert seen[0] is None and seen[1] is padded.attention_mask  # causal kernel only without padding
    monkeypatch.undo()
    with torch.no_grad():  # the masked computation of the unpadded row
        inputs = embed(model.get_input_embeddings(), alone.input_ids, alone.frames, layout.placeholder_id)
        logits = model(inputs_embeds=inputs, attention_mask=alone.attention_mask).logits[:, :-1]
        masked = torch.log_softmax(logits.masked_fill(banned, float("-inf")), -1).gather(-1, alone.targets[..., None])[..., 0]
    masked = torch.where(alone.loss_mask, masked, torch.zeros_like(masked))
    assert int(alone.loss_mask.sum()) > 0
    torch.testing.assert_close(lp_alone, masked, atol=1e-5, rtol=0)
    torch.testing.assert_close(lp_padded[:1, : lp_alone.shape[1]], lp_alone, atol=1e-5, rtol=0)
