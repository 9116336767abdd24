"""One typed config tree for a whole run, loaded from YAML with dotted command-line overrides.

    cfg = load_config("configs/demo.yaml", ["algorithm.kl_coef=0.02"])

Unknown keys, wrong types and inconsistent values raise `ConfigError` naming the key path.
Defaults live in the section models only; call sites never supply their own.
"""

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .base import ConfigError, Section
from .data import AUDIO_SAMPLE_RATE, DataConfig, SpeechConfig, SynthConfig
from .model import ModelConfig, SpeechEncoderConfig, TinyModelConfig
from .reward import CLAUSE_SPLITTERS, DEFAULT_SPLITTERS, RewardConfig
from .rollout import ContextConfig, RolloutConfig, SamplingConfig, ValidationSamplingConfig, VllmConfig
from .run import CheckpointConfig, ClusterConfig, LoggingConfig, MlflowConfig, RunSection, ValidationConfig
from .training import AlgorithmConfig, HearConfig, LearnerConfig, OptimizerConfig, SftConfig, SyncConfig

__all__ = [
    "AUDIO_SAMPLE_RATE",
    "AlgorithmConfig",
    "CheckpointConfig",
    "ClusterConfig",
    "ConfigError",
    "ContextConfig",
    "DataConfig",
    "HearConfig",
    "LearnerConfig",
    "LoggingConfig",
    "MlflowConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RewardConfig",
    "RolloutConfig",
    "RunConfig",
    "RunSection",
    "SamplingConfig",
    "Section",
    "SftConfig",
    "SpeechConfig",
    "SpeechEncoderConfig",
    "SyncConfig",
    "SynthConfig",
    "TinyModelConfig",
    "ValidationConfig",
    "ValidationSamplingConfig",
    "VllmConfig",
    "CLAUSE_SPLITTERS",
    "DEFAULT_SPLITTERS",
    "apply_overrides",
    "learner_on_gpu",
    "load_config",
    "parse_config",
    "to_yaml",
]


class RunConfig(Section):
    """The whole run: every section with its defaults."""

    run: RunSection = RunSection()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    learner: LearnerConfig = LearnerConfig()
    sync: SyncConfig = SyncConfig()
    sft: SftConfig = SftConfig()
    cluster: ClusterConfig = ClusterConfig()
    validation: ValidationConfig = ValidationConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _set_path(tree: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    node = tree
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise ConfigError(".".join(keys[: i + 1]), f"is a value, cannot set sub-key {keys[i + 1]!r}")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` words to a raw config dict; values are parsed as YAML scalars/lists."""
    for word in overrides:
        if "=" not in word:
            raise ConfigError(word, "override must look like key.path=value")
        path, raw = word.split("=", 1)
        path = path.strip()
        if not path or any(not p for p in path.split(".")):
            raise ConfigError(path or word, "empty key in override")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(path, f"cannot parse value {raw!r}: {exc}") from None
        _set_path(tree, path, value)
    return tree


def parse_config(tree: dict) -> RunConfig:
    """Validate a raw dict into a RunConfig, then check cross-field consistency."""
    if not isinstance(tree, dict):
        raise ConfigError("<root>", f"expected a mapping of sections, got {type(tree).__name__}")
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
        raise ConfigError(_dotted(err["loc"]), f"{err['msg']}{shown}{more}") from None
    check_consistency(cfg)
    return cfg


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml_tree(path: str | Path, _seen: tuple = ()) -> dict:
    """A config file as a raw dict; a top-level `base: other.yaml` (relative to the file) is loaded
    first and this file's values are merged over it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "config file not found")
    if path.resolve() in _seen:
        raise ConfigError(str(path), "config `base` chain loops back to this file")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(str(path), "top level must be a mapping of sections")
    base = tree.pop("base", None)
    if base is not None:
        tree = _merge(read_yaml_tree(path.parent / base, _seen + (path.resolve(),)), tree)
    return tree


def learner_on_gpu(cfg: RunConfig) -> bool:
    """Whether the learner ranks run on GPUs: `learner.device=cuda`, or `auto` with GPUs in their bundles."""
    return cfg.learner.device == "cuda" or (cfg.learner.device == "auto" and cfg.cluster.gpus_per_learner > 0)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (or the defaults when `path` is None) and apply dotted overrides."""
    tree = read_yaml_tree(path) if path is not None else {}
    return parse_config(apply_overrides(tree, list(overrides or [])))


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML (paths as strings), loadable again by `load_config`."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def check_consistency(cfg: RunConfig) -> None:
    """Cross-field rules no single field can express; each raises with the key path to fix."""
    _check_extensions(cfg)
    _check_turns(cfg)
    _check_model(cfg)
    _check_reward(cfg)
    _check_learner_and_sync(cfg)


def _check_extensions(cfg: RunConfig) -> None:
    """Plugins imported, then the scorer, latency metric and engine are registered and their needs met."""
    from hpo_ray.registry import import_plugins
    from hpo_ray.reward.latency import latency_spec
    from hpo_ray.reward.quality import check_scorer_config
    from hpo_ray.rollout.factory import check_engine_config

    import_plugins(cfg.run.plugins)
    check_scorer_config(cfg.reward)
    latency_spec(cfg.reward.latency)
    check_engine_config(cfg)


def _check_turns(cfg: RunConfig) -> None:
    """Chunks, turns and the token budget of one dialogue agree with each other."""
    d, r = cfg.data, cfg.rollout
    if d.chunk_seconds is not None and abs(d.chunk_seconds - d.turn_seconds) > 1e-6:
        raise ConfigError(
            "data.chunk_seconds",
            f"{d.chunk_seconds} != chunk_frames × frame_seconds × multiplier "
            f"= {d.chunk_frames} × {d.frame_seconds} × {d.multiplier} = {d.turn_seconds:.6g}",
        )
    if r.max_turns is not None and d.max_talk_seconds is not None:
        covered = r.max_turns * d.turn_seconds
        if covered + 1e-6 < d.max_talk_seconds:
            raise ConfigError(
                "rollout.max_turns",
                f"{r.max_turns} turns × {d.turn_seconds:.6g} s = {covered:.6g} s is shorter than "
                f"data.max_talk_seconds = {d.max_talk_seconds}",
            )
    for name in ("sampling", "validation_sampling"):
        _check_reply_budgets(f"rollout.{name}", getattr(r, name), d.multiplier, r.max_total_tokens)
    most, keep = r.context_window()
    if keep >= most:
        raise ConfigError("rollout.context.keep_tokens", f"{keep} must be smaller than rollout.context.max_tokens={most}")


def _check_reply_budgets(path: str, sampling: SamplingConfig, multiplier: int, max_total_tokens: int) -> None:
    """Every reply budget the config can produce — at `data.multiplier` and at each multiplier the map
    names (eval and the study re-run it at other m) — stays below the dialogue's token cap."""
    scaled = sampling.reply_budget(multiplier)
    if multiplier not in sampling.max_new_tokens_by_multiplier and scaled >= max_total_tokens:
        raise ConfigError(
            f"{path}.max_new_tokens",
            f"{sampling.max_new_tokens} per base chunk × data.multiplier={multiplier} = {scaled} new tokens per turn "
            f"must be smaller than rollout.max_total_tokens={max_total_tokens}",
        )
    for m, cap in sorted(sampling.max_new_tokens_by_multiplier.items()):
        if cap >= max_total_tokens:
            raise ConfigError(
                f"{path}.max_new_tokens_by_multiplier.{m}", f"{cap} must be smaller than rollout.max_total_tokens={max_total_tokens}"
            )


def _check_model(cfg: RunConfig) -> None:
    """The speech encoder's frames and chunks fit the data's; head counts divide."""
    d, sp, t = cfg.data, cfg.model.speech, cfg.model.tiny
    if abs(sp.frame_seconds - d.frame_seconds) > 1e-9:
        raise ConfigError(
            "model.speech.hop_samples",
            f"encoder frames are hop_samples × 2^subsampling_layers / sample_rate = "
            f"{sp.frame_seconds:.6g} s; data.frame_seconds is {d.frame_seconds}",
        )
    if d.chunk_frames % sp.chunk_frames:
        raise ConfigError(
            "model.speech.chunk_frames", f"must divide data.chunk_frames={d.chunk_frames} (an encoder chunk may not straddle a turn)"
        )
    if sp.num_heads % sp.num_kv_heads:
        raise ConfigError("model.speech.num_kv_heads", f"must divide num_heads={sp.num_heads}")
    if sp.window_samples < sp.hop_samples:
        raise ConfigError("model.speech.window_samples", f"must be at least hop_samples={sp.hop_samples}")
    if t.num_heads % t.num_kv_heads:
        raise ConfigError("model.tiny.num_kv_heads", f"must divide num_heads={t.num_heads}")


def _check_reward(cfg: RunConfig) -> None:
    """The segmenter's model, the splitter sets and group normalisation (the scorer's needs: `_check_extensions`)."""
    rw, a = cfg.reward, cfg.algorithm
    if rw.segmenter == "embedding" and rw.embedding_model_path is None:
        raise ConfigError("reward.embedding_model_path", "required for reward.segmenter=embedding")
    for lang, chars in rw.splitters.items():
        if not chars:
            raise ConfigError(f"reward.splitters.{lang}", "needs at least one splitter character")
    if rw.normalize and a.group_size < 2:
        raise ConfigError("algorithm.group_size", "group normalisation (reward.normalize) needs at least 2 rollouts per talk")


def _check_learner_and_sync(cfg: RunConfig) -> None:
    """Batch sizes divide over ranks, checkpoints can be ranked, the sync backend suits the placement,
    and asynchronous (bounded-staleness) training has separate pools."""
    a = cfg.algorithm
    if a.max_staleness > 0 and cfg.cluster.colocate:
        raise ConfigError(
            "algorithm.max_staleness",
            f"{a.max_staleness} overlaps rollouts with training, which needs separate pools; with cluster.colocate=true the "
            "rollout workers share the learner's devices and stay synchronous (set algorithm.max_staleness=0 or cluster.colocate=false)",
        )
    lb = cfg.learner
    if lb.global_batch_size is not None and lb.global_batch_size % lb.num_ranks:
        raise ConfigError("learner.global_batch_size", f"must be a multiple of learner.num_ranks={lb.num_ranks}")
    if cfg.checkpoint.every % cfg.validation.every and cfg.checkpoint.keep_best:
        raise ConfigError("checkpoint.every", f"must be a multiple of validation.every={cfg.validation.every} to rank checkpoints")
    if cfg.sync.backend == "cuda_ipc" and not cfg.cluster.colocate:
        raise ConfigError(
            "sync.backend",
            "cuda_ipc shares GPU memory between a learner and the engines on its GPU: "
            "it needs cluster.colocate=true (separate pools: use nccl)",
        )
    if cfg.sync.backend in ("nccl", "cuda_ipc") and lb.device == "cpu":
        raise ConfigError("sync.backend", f"{cfg.sync.backend} needs GPUs; learner.device is cpu")
