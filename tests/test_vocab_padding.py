"""A model whose embedding matrix has rows past the tokenizer (Qwen3: 151,936 vs 151,669 tokens):
those padding ids are banned in the torch engine and carry no mass in the learner's distribution."""

import numpy as np
import pytest
import torch

from hpo_ray.config import SamplingConfig, TinyModelConfig
from hpo_ray.dialogue import embed
from hpo_ray.learner.batch import SequenceItem, collate, token_logprobs
from hpo_ray.model.build import tiny_model_config
from hpo_ray.rollout.protocol import TalkInput
from hpo_ray.rollout.sampling import ban_mask, policy_ban_mask
from hpo_ray.rollout.torch_engine import TorchEngine

PADDING = 24


def make_talks(lengths=(45, 30), width=64, seed=0):
    rng = np.random.default_rng(seed)
    return [TalkInput(f"t{i}", f"g{i}", "en", "de", rng.standard_normal((n, width)).astype(np.float32), 14) for i, n in enumerate(lengths)]


@pytest.fixture(scope="module")
def padded_model(tiny_tokenizer, layout):
    """The tiny model with PADDING extra (tied) rows, each pointed along the mean final hidden state
    of a dialogue, so that unbanned they would win most steps."""
    from transformers import AutoModelForCausalLM

    hf = tiny_model_config(TinyModelConfig(), len(tiny_tokenizer) + PADDING, tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf, dtype=torch.float32).eval()
    talk = make_talks((42,))[0]
    d = layout.build("en", "de", [(14, layout.encode("ka lomi") + [layout.end_of_turn_id])] * 3)
    with torch.no_grad():
        inputs = embed(model.get_input_embeddings(), torch.tensor([d.input_ids]), torch.from_numpy(talk.frames), layout.placeholder_id)
        mu = model.model(inputs_embeds=inputs).last_hidden_state[0].mean(0)
        model.model.embed_tokens.weight[len(tiny_tokenizer) :] = 6.0 * mu / mu.norm()
    return model


def test_padding_ids_are_banned_with_the_tokenizer_bans(layout, tiny_tokenizer):
    n = len(tiny_tokenizer)
    banned = layout.banned_token_ids(n + PADDING)
    assert set(range(n, n + PADDING)) <= set(banned)
    assert [i for i in banned if i < n] == layout.banned_token_ids(n)
    with pytest.raises(ValueError, match="vocab_size"):
        layout.banned_token_ids(n - 1)


def test_torch_engine_never_samples_a_vocabulary_padding_id(padded_model, layout, tiny_tokenizer):
    n = len(tiny_tokenizer)
    talks = make_talks()
    probe = list(TorchEngine(padded_model, layout).generate(talks[:1], 1, SamplingConfig(greedy=True, max_new_tokens=6), seed=0))[0]
    with torch.no_grad():
        inputs = embed(
            padded_model.get_input_embeddings(),
            torch.tensor([probe.input_ids]),
            torch.from_numpy(talks[0].frames[: probe.n_frames]),
            layout.placeholder_id,
        )
        logits = padded_model(inputs_embeds=inputs).logits[0]
    pos = [p - 1 for p, m in enumerate(probe.assistant_mask) if m]
    tokenizer_bans_only = logits[pos].masked_fill(ban_mask(n + PADDING, layout.banned_token_ids(n)), float("-inf"))
    assert (tokenizer_bans_only.argmax(-1) >= n).float().mean() > 0.5  # without the padding ban they would win
    for cfg in (SamplingConfig(greedy=True, max_new_tokens=6), SamplingConfig(temperature=1.5, max_new_tokens=6)):
        for traj in TorchEngine(padded_model, layout).generate(talks, 3, cfg, seed=2):
            assert max(t for turn in traj.turn_token_ids for t in turn) < n


def test_learner_distribution_gives_padding_ids_no_mass(padded_model, layout, tiny_tokenizer, tmp_path):
    n = len(tiny_tokenizer)
    d = layout.build_text("en", "de", [(5, "ka lomi"), (4, ""), (6, "teru sa .")])
    np.save(tmp_path / "f.npy", np.random.default_rng(0).standard_normal((d.n_frames, 64)).astype(np.float32))
    item = SequenceItem(d.input_ids, d.assistant_mask, [0.0] * sum(d.assistant_mask[1:]), 1.0, str(tmp_path / "f.npy"), None, d.n_frames)
    mb = collate([item], [0], tiny_tokenizer.pad_token_id)
    lp, entropy = token_logprobs(padded_model, mb, layout.placeholder_id, policy_ban_mask(layout, n + PADDING), 0.7, with_entropy=True)
    with torch.no_grad():  # the same distribution computed over the tokenizer's ids alone
        inputs = embed(padded_model.get_input_embeddings(), mb.input_ids, mb.frames, layout.placeholder_id)
        logits = padded_model(inputs_embeds=inputs).logits[:, :-1, :n] / 0.7
        real = torch.log_softmax(logits.masked_fill(ban_mask(n, layout.banned_token_ids(n)), float("-inf")), -1)
    expected = real.gather(-1, mb.targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(lp[mb.loss_mask], expected[mb.loss_mask], atol=1e-5, rtol=0)
    assert torch.isfinite(entropy).all()
