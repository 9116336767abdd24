"""Extension by registration: a plugin scorer and latency metric drive a real reward; unknown names are
config errors listing what is registered; a scorer's declared needs are checked from its spec."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpo_ray.config import ConfigError, RewardConfig, load_config
from hpo_ray.reward import RewardFunction, RolloutText, ScorerSpec, register_scorer
from hpo_ray.reward.quality import SCORERS, make_scorer
from hpo_ray.rollout.factory import ENGINES, EngineSpec, make_engine, register_engine
from tests.registry_plugin import char_overlap_f

PLUGIN = "run.plugins=[tests.registry_plugin]"
ROOT = Path(__file__).resolve().parents[1]
REFS = ["Ich habe ein Buch gekauft.", "Er ging nach Hause."]


def two_sentence_rollout() -> RolloutText:
    """Sentence 1 heard 0–3 s, its words in turn 1 (at 2 s); sentence 2 heard 3–4.5 s, its words in turn 5 (6 s)."""
    return RolloutText(
        id="r",
        group="talk",
        src_lang="en",
        tgt_lang="de",
        chunk_seconds=1.0,
        turns=["", "Ich habe ein Buch", "", "", "", "Er ging heim."],
        src_sentences=["I bought a book.", "He went home."],
        ref_sentences=REFS,
        segments=[(0.0, 3.0), (3.0, 4.5)],
    )


def test_plugin_scorer_and_latency_metric_validate_and_score_a_reward():
    cfg = load_config(None, [PLUGIN, "reward.quality=char_f", "reward.latency=first_delay"])
    assert cfg.reward.quality_threshold == 60.0  # the plugin's default_target
    (score,) = RewardFunction(cfg.reward).score([two_sentence_rollout()])
    assert [s.hyp for s in score.sentences] == ["Ich habe ein Buch", "Er ging heim."]
    assert [s.quality for s in score.sentences] == pytest.approx([char_overlap_f(s.hyp, r) for s, r in zip(score.sentences, REFS)])
    assert [s.latency for s in score.sentences] == pytest.approx([2.0, 3.0])  # first word − sentence start
    assert score.quality == pytest.approx(sum(s.quality for s in score.sentences) / 2)
    (chrf,) = RewardFunction(RewardConfig()).score([two_sentence_rollout()])
    assert chrf.quality != pytest.approx(score.quality) and chrf.latency != pytest.approx(score.latency)


def test_a_process_given_only_the_config_dict_registers_the_plugin():
    """Actors get the config as a dict and parse it: `run.plugins` must register in their process too."""
    tree = load_config(None, [PLUGIN, "reward.quality=char_f", "reward.latency=first_delay"]).model_dump(mode="json")
    code = (
        "import json, sys; from hpo_ray.config import parse_config; from hpo_ray.reward import RewardFunction; "
        "cfg = parse_config(json.loads(sys.stdin.read())); print(type(RewardFunction(cfg.reward).scorer).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(tree), capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "CharOverlapScorer"


@pytest.mark.parametrize(
    "override, field, registered",
    [
        ("reward.quality=chrF", "reward.quality", "bleu, chrf, comet, metricx"),
        ("reward.latency=al", "reward.latency", "hpo, laal"),
        ("rollout.engine=sglang", "rollout.engine", "torch, vllm"),
    ],
)
def test_unknown_name_is_a_config_error_listing_the_registered_ones(override, field, registered):
    with pytest.raises(ConfigError, match=f"at {field}: unknown .* registered: .*") as err:
        load_config(None, [override])
    listed = str(err.value).split("registered: ")[1].split(", ")
    assert set(registered.split(", ")) <= set(listed)


def test_an_unimportable_plugin_is_a_config_error_at_run_plugins():
    with pytest.raises(ConfigError, match=r"at run\.plugins: cannot import plugin module 'tests\.no_such_plugin'"):
        load_config(None, ["run.plugins=[tests.no_such_plugin]"])


def test_a_scorer_declared_model_path_and_dependencies_are_checked_from_its_spec():
    spec = ScorerSpec(
        "needs_extras",
        lambda cfg, device: pytest.fail("must not be built"),
        default_target=1.0,
        histogram_bounds=(1.0,),
        needs_model_path=True,
        requires=("hpo_ray_no_such_dependency",),
        install_hint="pip install hpo-ray-no-such-dependency",
    )
    register_scorer(spec)
    try:
        with pytest.raises(ConfigError, match="at reward.quality_model_path: required for reward.quality=needs_extras"):
            load_config(None, ["reward.quality=needs_extras"])
        cfg = RewardConfig(quality="needs_extras", quality_model_path="/models/x")
        with pytest.raises(ConfigError, match="needs hpo_ray_no_such_dependency, which is not installed: pip install hpo-ray-no"):
            make_scorer(cfg)
    finally:
        SCORERS.unregister("needs_extras")


def test_an_engine_whose_dependency_is_missing_is_refused_at_rollout_engine():
    spec = EngineSpec("needs_extras", lambda *a: pytest.fail("must not be built"), requires=("no_such_engine_mod",), install_hint="pip it")
    register_engine(spec)
    try:
        cfg = load_config(None, ["rollout.engine=needs_extras"])
        with pytest.raises(ConfigError, match="at rollout.engine: needs_extras needs no_such_engine_mod, which is not installed: pip it"):
            make_engine(cfg, "/models/none")
    finally:
        ENGINES.unregister("needs_extras")


def test_a_corpus_level_scorer_is_refused_as_the_reward():
    register_scorer(ScorerSpec("corpus_only", lambda cfg, device: None, default_target=1.0, histogram_bounds=(1.0,), sentence_level=False))
    try:
        with pytest.raises(ConfigError, match="at reward.quality: corpus_only is a corpus-level scorer"):
            load_config(None, ["reward.quality=corpus_only"])
    finally:
        SCORERS.unregister("corpus_only")


def test_a_taken_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="'chrf' is already registered"):
        register_scorer(ScorerSpec("chrf", lambda cfg, device: None, default_target=1.0, histogram_bounds=(1.0,)))
