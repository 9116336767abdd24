"""vLLM rollout engine (CPU build): same dialogues as the torch engine, prefix caching, in-place weights.

One in-process engine serves the whole module. The policy is the conftest tiny model re-drawn with
larger weights and an end-of-turn row aligned with its hidden states, so greedy turns vary and
some end early (the conftest model's greedy turns repeat one token and never end).
"""

import copy

import numpy as np
import pytest
import torch

from hpo_ray.config import SamplingConfig, load_config
from hpo_ray.dialogue import embed
from hpo_ray.rollout.protocol import TalkInput, Trajectory
from hpo_ray.rollout.sampling import policy_log_probs
from hpo_ray.rollout.torch_engine import TorchEngine

try:
    import vllm  # noqa: F401
except Exception as exc:  # an unusable install fails with more than ImportError (e.g. torchvision)
    pytest.skip(f"vllm is not importable here ({type(exc).__name__}: {exc}); run `make test-vllm`", allow_module_level=True)

pytestmark = pytest.mark.vllm
PADDING = 32


def make_talks(lengths=(140, 130), width=64, seed=0):
    rng = np.random.default_rng(seed)
    return [TalkInput(f"t{i}", f"g{i}", "en", "de", rng.standard_normal((n, width)).astype(np.float32), 14) for i, n in enumerate(lengths)]


def steer_row(model, layout, token_id: int, scale: float) -> None:
    """Point `token_id`'s (tied) embedding row along the model's mean final hidden state."""
    talk = make_talks((42,))[0]
    d = layout.build("en", "de", [(14, layout.encode("ka lomi") + [layout.end_of_turn_id])] * 3)
    with torch.no_grad():
        inputs = embed(model.get_input_embeddings(), torch.tensor([d.input_ids]), torch.from_numpy(talk.frames), layout.placeholder_id)
        mu = model.model(inputs_embeds=inputs).last_hidden_state[0].mean(0)
        model.model.embed_tokens.weight[token_id] = scale * mu / mu.norm()


@pytest.fixture(scope="module")
def policy(tiny_model, layout):
    model = copy.deepcopy(tiny_model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2, generator=gen)
    steer_row(model, layout, layout.end_of_turn_id, 0.85)
    # embedding rows past the tokenizer, as in Qwen3 (151,936 rows, 151,669 tokens): never sampled
    model.resize_token_embeddings(len(layout.tokenizer) + PADDING, mean_resizing=False)
    return model.eval()


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, policy, tiny_tokenizer):
    from hpo_ray.model.build import save_policy

    return save_policy(policy, tiny_tokenizer, tmp_path_factory.mktemp("vllm") / "policy")


@pytest.fixture(scope="module")
def engine(policy_dir):
    from hpo_ray.rollout.vllm_engine import VllmEngine

    cfg = load_config(None, ["rollout.engine=vllm", "rollout.device=cpu", "model.dtype=float32"])
    return VllmEngine.from_config(cfg, policy_dir, "cpu")


def with_weights(policy, new: dict):
    model = copy.deepcopy(policy)
    model.load_state_dict(new)
    return model


def full_logits(model, layout, traj: Trajectory, talk: TalkInput) -> torch.Tensor:
    ids = torch.tensor([traj.input_ids])
    frames = torch.from_numpy(talk.frames[: traj.n_frames])
    with torch.no_grad():
        return model(inputs_embeds=embed(model.get_input_embeddings(), ids, frames, layout.placeholder_id)).logits[0]


def test_greedy_ten_turn_talk_matches_the_torch_engine(engine, policy, layout):
    talks = make_talks()  # 10 turns each
    greedy = SamplingConfig(greedy=True, max_new_tokens=8)
    ours = list(engine.generate(talks, 2, greedy, seed=0))
    ref = list(TorchEngine(policy, layout).generate(talks, 2, greedy, seed=0))
    assert [(t.talk_id, t.sample_index) for t in ours] == [(t.talk_id, t.sample_index) for t in ref]
    mismatched = sum(a != b for x, y in zip(ours, ref) for a, b in zip(x.input_ids, y.input_ids))
    assert mismatched == 0, f"{mismatched} token(s) differ between the vLLM and torch engines"
    for a, b in zip(ours, ref):
        assert a.input_ids == b.input_ids and a.assistant_mask == b.assistant_mask and a.turns == b.turns
        assert a.placeholder_positions == b.placeholder_positions and a.turn_texts == b.turn_texts
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)
        assert a.stats["logprob_distribution"] == "policy"
    lengths = [len(t) for traj in ours for t in traj.turn_token_ids]
    assert len(ours[0].turns) == 10 and min(lengths) < 8 == max(lengths)  # some turns end at <|im_end|>, some are cut


def test_sampled_logprobs_are_tempered_and_banned_like_the_learner(engine, policy, layout):
    talks = make_talks((70,))
    cfg = SamplingConfig(temperature=0.7, max_new_tokens=6)
    trajs = list(engine.generate(talks, 3, cfg, seed=4))
    banned = torch.zeros(policy.config.vocab_size, dtype=torch.bool)
    banned[layout.banned_token_ids(policy.config.vocab_size)] = True
    for traj in trajs:
        pos = [p for p, m in enumerate(traj.assistant_mask) if m]
        logits = full_logits(policy, layout, traj, talks[0])[[p - 1 for p in pos]]
        tokens = torch.tensor(traj.input_ids)[pos][:, None]
        expected = policy_log_probs(logits, banned, 0.7).gather(1, tokens).squeeze(1)
        torch.testing.assert_close(torch.tensor(traj.logprobs), expected, atol=1e-4, rtol=0)
        raw = torch.log_softmax(logits, -1).gather(1, tokens).squeeze(1)  # vLLM's default mode would give this
        assert (torch.tensor(traj.logprobs) - raw).abs().max() > 1e-2


def test_prefix_cache_reuses_earlier_turns_and_is_reset_by_a_weight_load(engine, policy):
    talk = make_talks((140,), seed=11)  # frames no other test uses: nothing cached yet
    list(engine.generate(talk, 1, SamplingConfig(max_new_tokens=6), seed=1))
    rates = engine.stats["last_generate"]["turn_hit_rates"]
    assert len(rates) == 10 and rates[0] < 0.3 and min(rates[1:]) > 0.2, rates  # turn 0 shares only the system prompt
    assert engine.stats["last_generate"]["prefix_cache_hit_rate"] > 0.5
    first = [TalkInput("t", "g", "en", "de", talk[0].frames[:14], 14)]
    list(engine.generate(first, 1, SamplingConfig(max_new_tokens=2), seed=1))
    assert engine.stats["last_generate"]["turn_hit_rates"][0] > 0.5  # the same first turn is cached
    engine.load_weights(policy.state_dict().items(), version=engine.weight_version)
    list(engine.generate(first, 1, SamplingConfig(max_new_tokens=2), seed=1))
    assert engine.stats["last_generate"]["turn_hit_rates"][0] == 0  # ... until new weights arrive


def test_weights_load_in_place_and_match_a_torch_engine_with_the_same_weights(engine, policy, layout):
    old = {k: v.clone() for k, v in policy.state_dict().items()}
    gen = torch.Generator().manual_seed(7)
    new = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in old.items()}
    new["lm_head.weight"] = new["model.embed_tokens.weight"]  # tied
    talks = make_talks((84,))
    greedy = SamplingConfig(greedy=True, max_new_tokens=6)
    llm = engine.llm
    before = [t.input_ids for t in engine.generate(talks, 1, greedy, seed=0)]
    try:
        engine.load_weights(new.items(), version=3)
        assert engine.llm is llm and engine.weight_version == 3
        after = list(engine.generate(talks, 1, greedy, seed=0))
        ref = list(TorchEngine(with_weights(policy, new), layout).generate(talks, 1, greedy, seed=0))
        assert [t.input_ids for t in after] != before
        assert [t.input_ids for t in after] == [t.input_ids for t in ref] and after[0].weight_version == 3
        live = dict(engine.named_weights())
        assert sorted(live) == sorted(new) and all(torch.equal(live[k], new[k]) for k in new)
        # one bucket of a sync: a subset (q of layer 0 only) changes only that tensor
        name = "model.layers.0.self_attn.q_proj.weight"
        engine.load_weights([(name, old[name])], version=4)
        live = dict(engine.named_weights())
        assert torch.equal(live[name], old[name]) and torch.equal(
            live["model.layers.0.self_attn.k_proj.weight"], new["model.layers.0.self_attn.k_proj.weight"]
        )
        with pytest.raises(KeyError, match="no weight"):
            engine.load_weights([("nope.weight", torch.zeros(1))], version=5)
    finally:
        engine.load_weights(old.items(), version=0)
    assert [t.input_ids for t in engine.generate(talks, 1, greedy, seed=0)] == before


def test_banned_tokens_are_never_sampled_even_when_most_likely(engine, policy, layout):
    newline = layout.encode("\n")[0]
    assert newline in layout.banned_token_ids(policy.config.vocab_size)
    tempted = copy.deepcopy(policy)
    steer_row(tempted, layout, newline, 3.0)
    talks = make_talks((70,))
    probe = list(TorchEngine(tempted, layout).generate(talks, 1, SamplingConfig(greedy=True, max_new_tokens=6), seed=0))[0]
    pos = [p for p, m in enumerate(probe.assistant_mask) if m]
    top = full_logits(tempted, layout, probe, talks[0])[[p - 1 for p in pos]].argmax(-1)
    assert (top == newline).float().mean() > 0.5  # without the ban, "\n" would win most steps
    old = {k: v.clone() for k, v in policy.state_dict().items()}
    try:
        engine.load_weights(tempted.state_dict().items(), version=1)
        banned = set(layout.banned_token_ids(policy.config.vocab_size))
        for cfg in (SamplingConfig(greedy=True, max_new_tokens=6), SamplingConfig(temperature=1.5, max_new_tokens=6)):
            for traj in engine.generate(talks, 4, cfg, seed=2):
                assert not banned & {t for turn in traj.turn_token_ids for t in turn}
                assert all("\n" not in text for text in traj.turn_texts)
    finally:
        engine.load_weights(old.items(), version=0)


def test_vocabulary_padding_ids_are_never_sampled_even_when_most_likely(engine, policy, layout):
    n = len(layout.tokenizer)
    assert policy.config.vocab_size == n + PADDING
    tempted = copy.deepcopy(policy)
    for pad in range(n, n + PADDING):
        steer_row(tempted, layout, pad, 6.0)
    talks = make_talks((70,))
    probe = list(TorchEngine(tempted, layout).generate(talks, 1, SamplingConfig(greedy=True, max_new_tokens=6), seed=0))[0]
    pos = [p for p, m in enumerate(probe.assistant_mask) if m]
    logits = full_logits(tempted, layout, probe, talks[0])[[p - 1 for p in pos]]
    logits[:, layout.banned_token_ids(n)] = float("-inf")  # the tokenizer's own bans only
    assert (logits.argmax(-1) >= n).float().mean() > 0.5  # without the padding ban, a padding id would win
    old = {k: v.clone() for k, v in policy.state_dict().items()}
    try:
        engine.load_weights(tempted.state_dict().items(), version=1)
        for cfg in (SamplingConfig(greedy=True, max_new_tokens=6), SamplingConfig(temperature=1.5, max_new_tokens=6)):
            for traj in engine.generate(talks, 4, cfg, seed=2):
                assert max(t for turn in traj.turn_token_ids for t in turn) < n
    finally:
        engine.load_weights(old.items(), version=0)


def test_dialogue_hitting_the_length_cap_ends_alone_with_a_flag(engine, policy, layout):
    talks = make_talks((40, 160))
    cfg = SamplingConfig(greedy=True, max_new_tokens=4)
    cap, engine.max_total_tokens = engine.max_total_tokens, 260
    try:
        trajs = list(engine.generate(talks, 2, cfg, seed=0))
    finally:
        engine.max_total_tokens = cap
    ref = list(TorchEngine(policy, layout, max_total_tokens=260).generate(talks, 2, cfg, seed=0))
    assert all(not t.truncated and len(t.turns) == 3 for t in trajs if t.talk_id == "t0")
    assert all(t.truncated and len(t.turns) < 12 for t in trajs if t.talk_id == "t1")
    assert all(len(t.input_ids) <= 260 for t in trajs)
    assert [(t.input_ids, t.truncated) for t in trajs] == [(t.input_ids, t.truncated) for t in ref]


def test_sampling_with_the_same_seed_repeats(engine):
    cfg = SamplingConfig(max_new_tokens=6)
    a = [t.input_ids for t in engine.generate(make_talks((56,)), 2, cfg, seed=5)]
    assert a == [t.input_ids for t in engine.generate(make_talks((56,)), 2, cfg, seed=5)]
    assert a != [t.input_ids for t in engine.generate(make_talks((56,)), 2, cfg, seed=6)]
    assert a[0] != a[1]  # the G samples of one talk differ


def test_top_p_makes_the_reported_distribution_explicit(engine):
    (traj,) = engine.generate(make_talks((14,)), 1, SamplingConfig(top_p=0.9, max_new_tokens=2), seed=0)
    assert traj.stats["logprob_distribution"] == "truncated"


def test_checkpoint_reader_for_sharded_engines_agrees_with_the_engine(engine, policy_dir):
    from hpo_ray.rollout.vllm_engine import _checkpoint_names_and_embedding

    names, table = _checkpoint_names_and_embedding(policy_dir)
    assert names | {"lm_head.weight"} == engine.weight_names
    assert torch.equal(table, engine._embedding.weight)


def test_config_errors_name_the_field_before_vllm_starts(policy_dir):
    from hpo_ray.config import ConfigError
    from hpo_ray.rollout.vllm_engine import VllmEngine

    cfg = load_config(None, ["rollout.engine=vllm", "rollout.max_total_tokens=4096", "rollout.vllm.max_model_len=2048"])
    with pytest.raises(ConfigError, match="rollout.vllm.max_model_len"):
        VllmEngine.from_config(cfg, policy_dir, "cpu")


def test_bounded_context_gives_the_torch_engines_dialogues(engine, policy, layout):
    talks = make_talks((300, 200))
    cfg = SamplingConfig(greedy=True, max_new_tokens=6)
    engine.context = (200, 100)
    try:
        trajs = sorted(engine.generate(talks, 1, cfg, seed=0), key=lambda t: t.talk_id)
    finally:
        engine.context = None
    ref = sorted(TorchEngine(policy, layout, context=(200, 100)).generate(talks, 1, cfg, seed=0), key=lambda t: t.talk_id)
    assert all(not t.truncated and t.stats["context_slides"] >= 3 for t in trajs)
    assert [t.turns[-1].n_frames for t in trajs] == [300 % 14, 200 % 14]  # read to the end
    assert [t.input_ids for t in trajs] == [t.input_ids for t in ref]
    assert [t.stats["window_starts"] for t in trajs] == [t.stats["window_starts"] for t in ref]
    for mine, theirs in zip(trajs, ref):
        torch.testing.assert_close(torch.tensor(mine.logprobs), torch.tensor(theirs.logprobs), atol=1e-4, rtol=0)


def test_vllm_engine_satisfies_the_engine_protocol(engine):
    from hpo_ray.rollout.protocol import RolloutEngine

    assert isinstance(engine, RolloutEngine)
    assert engine.loads_whole_state in (True, False) and isinstance(engine.stats, dict) and engine.context is None


def test_a_turn_at_m_2_gets_the_scaled_reply_budget_as_in_the_torch_engine(engine, policy, layout):
    talks = [TalkInput(t.talk_id, t.group_id, "en", "de", t.frames, 28, multiplier=2) for t in make_talks()]  # 5 turns of 2 chunks
    greedy = SamplingConfig(greedy=True, max_new_tokens=4)  # per base chunk: 8 new tokens per turn
    ours = list(engine.generate(talks, 1, greedy, seed=0))
    ref = list(TorchEngine(policy, layout).generate(talks, 1, greedy, seed=0))
    assert [t.input_ids for t in ours] == [t.input_ids for t in ref]
    lengths = [len(t) for traj in ours for t in traj.turn_token_ids]
    assert max(lengths) == 8
