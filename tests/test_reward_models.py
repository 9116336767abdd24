"""Model-based parts of the reward through their real loading code: COMET, MetricX, embedding segmenter."""

import numpy as np
import pytest
import torch

from hpo_ray.config import RewardConfig, load_config
from hpo_ray.reward import RewardFunction, RolloutText, make_scorer
from hpo_ray.reward.embedding import EmbeddingSegmenter, align_blocks
from hpo_ray.reward.splitting import split_sentences
from hpo_ray.reward.units import units_from_turns, units_of_text

comet = pytest.importorskip("comet")
from tests import reward_models  # noqa: E402

SRC = ["I bought a book.", "He left.", "我"]
HYP = ["Ich kaufte ein Buch.", "Er ging.", "你好"]
REF = ["Ich habe ein Buch gekauft.", "Er ist gegangen.", "他"]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("reward-models")
    return {
        "comet": reward_models.build_comet(root / "comet", "regression"),
        "xcomet": reward_models.build_comet(root / "xcomet", "unified"),
        "metricx": reward_models.build_metricx(root / "metricx"),
        "encoder": reward_models.build_encoder(root / "encoder"),
    }


@pytest.mark.parametrize("name", ["comet", "xcomet"])
def test_comet_scores_match_comets_own_predict(models, name):
    scorer = make_scorer(RewardConfig(quality="comet", quality_model_path=models[name], device="cpu", quality_batch_size=2))
    ours = scorer.score(SRC, HYP, REF, "de")
    official = scorer.model.predict(
        [{"src": s, "mt": h, "ref": r} for s, h, r in zip(SRC, HYP, REF)], batch_size=3, gpus=0, progress_bar=False
    ).scores
    assert ours == pytest.approx(list(official), abs=1e-5)
    assert scorer.worst == 0.0


@pytest.mark.skipif(int(__import__("transformers").__version__.split(".")[0]) < 5, reason="transformers 5 only")
@pytest.mark.parametrize("name, error", [("comet", ValueError), ("xcomet", AttributeError)])
def test_comet_without_the_compat_shim_fails_on_transformers_5(models, name, error):
    raw = comet.load_from_checkpoint(str(models[name] / "checkpoints" / "model.ckpt"), local_files_only=True)
    with pytest.raises(error):
        raw.predict_step(raw.prepare_sample([{"src": "a", "mt": "b", "ref": "c"}], stage="predict"))


def test_comet_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoints/model.ckpt"):
        make_scorer(RewardConfig(quality="comet", quality_model_path=tmp_path, device="cpu"))


def test_metricx_scores_are_the_negated_clipped_regression_logit(models):
    from transformers import AutoTokenizer, MT5ForConditionalGeneration

    scorer = make_scorer(RewardConfig(quality="metricx", quality_model_path=models["metricx"], device="cpu", quality_batch_size=2))
    ours = scorer.score(SRC, HYP, REF, "de")
    # Independent path: the full seq2seq forward, one unpadded input at a time.
    tok = AutoTokenizer.from_pretrained(str(models["metricx"]))
    model = MT5ForConditionalGeneration.from_pretrained(str(models["metricx"])).eval()
    token = tok.convert_tokens_to_ids("<extra_id_10>")
    expected = []
    for s, h, r in zip(SRC, HYP, REF):
        ids = tok([f"source: {s} candidate: {h} reference: {r}"], add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            logit = model(**ids, decoder_input_ids=torch.zeros((1, 1), dtype=torch.long)).logits[0, 0, token]
        expected.append(-float(logit.clamp(0, 25)))
    assert ours == pytest.approx(expected, abs=1e-4)
    assert all(-25.0 <= q < 0.0 for q in ours)  # the tiny model's scores land inside the clip range
    assert scorer.worst == -25.0


def test_metricx_reward_config_default_threshold_and_end_to_end(models):
    cfg = load_config(
        None, ["reward.quality=metricx", f"reward.quality_model_path={models['metricx']}", "reward.device=cpu", "reward.target_quality=-30"]
    ).reward
    r = RolloutText(
        id="a",
        group="g",
        src_lang="en",
        tgt_lang="de",
        chunk_seconds=1.0,
        turns=["Ich kaufte ein Buch.", ""],
        src_sentences=SRC[:2],
        ref_sentences=REF[:2],
        segments=[(0.0, 1.0), (1.5, 2.0)],
    )
    (score,) = RewardFunction(cfg).score([r])
    assert score.sentences[1].quality == -25.0 and score.sentences[1].latency == cfg.max_latency
    assert -25.0 <= score.sentences[0].quality <= 0.0
    assert score.sentences[0].hinged < 0.0  # passes the (lowered) bar, so it earns latency credit


def test_align_blocks_prefers_matches_and_skips_unmatched_sentences():
    # 3 refs, 2 hypothesis sentences matching refs 0 and 2; ref 1 has no counterpart.
    eye = {(1, 1): 1.0 - np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])}
    assert align_blocks(eye, 3, 2, skip_cost=0.5) == [(0, 1, 0, 1), (1, 1, 1, 0), (2, 1, 1, 1)]
    # Two references translated as one sentence: a 2-1 block beats a match plus a skip.
    merged = {(1, 1): np.array([[0.45], [0.45]]), (2, 1): np.array([[0.1]])}
    assert align_blocks(merged, 2, 1, skip_cost=0.5) == [(0, 2, 0, 1)]


def test_embedding_segmenter_aligns_identical_text_one_to_one_and_keeps_delays(models):
    cfg = RewardConfig(segmenter="embedding", embedding_model_path=models["encoder"], device="cpu")
    segmenter = EmbeddingSegmenter.from_config(cfg)
    refs_text = ["Ich habe ein Buch.", "Er ging nach Hause.", "Das war gut."]
    hyp = units_from_turns(["Ich habe ein Buch.", "Er ging", "nach Hause. Das war gut."], 1.0, False)
    segments = segmenter.segment(split_sentences(hyp, ".!?"), [units_of_text(t, False) for t in refs_text])
    assert [s.text() for s in segments] == refs_text
    assert segments[1].delays == (2.0, 2.0, 3.0, 3.0)


def test_embedding_segmenter_leaves_a_missing_sentence_unaligned_and_loses_no_unit(models):
    cfg = RewardConfig(segmenter="embedding", embedding_model_path=models["encoder"], device="cpu")
    fn = RewardFunction(cfg)
    r = RolloutText(
        id="a",
        group="g",
        src_lang="en",
        tgt_lang="zh",
        chunk_seconds=1.0,
        turns=["我今天买了书。", "", "你好！"],
        src_sentences=["a", "b", "c"],
        ref_sentences=["我今天买了一本书。", "他走了。", "你好！"],
        segments=[(0, 1), (1, 2), (2, 3)],
    )
    (score,) = fn.score([r])
    assert [s.hyp for s in score.sentences] == ["我今天买了书。", "", "你好！"]
    assert score.sentences[1].latency == cfg.max_latency
