"""`hpo-ray bench rollout`: what persistent KV reuse buys in a streaming dialogue, and vLLM vs torch.

One talk of `--turns` chunks, G dialogues (algorithm.group_size), on the tiny model (or
model.path): (a) the torch engine with one persistent KV cache per dialogue vs the same engine
re-prefilling the whole dialogue every turn (what HF-generate-based multi-turn trainers do), same
seed; (b) the vLLM engine (CPU build here) vs the torch engine. Each torch row also reports the share
of its wall time spent outside the model's forward calls (the engine's own overhead) and tokens/s.
Sampling comes from rollout.sampling; every setting is a `key.path=value` override. The last line is
one JSON object.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hpo_ray.config import RunConfig, load_config
from hpo_ray.dialogue import DialogueLayout, make_layout
from hpo_ray.rollout.protocol import TalkInput, Trajectory
from hpo_ray.rollout.torch_engine import TorchEngine

TOKENIZER_TEXTS = [
    "ka lomi teru sa .",
    "mi tora pelu ka lomi .",
    "sa nuvi ka tora peli mi .",
    "Translate the following speech from English to German.",
] * 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--turns", type=int, default=60, help="chunks (= assistant turns) in the talk")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (both torch runs use it)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 on a small shared machine: thread sync dwarfs tiny ops)"
    )
    parser.add_argument("--skip-vllm", action="store_true", help="leave out part (b)")
    parser.add_argument("--config", default=None, help="YAML config (defaults when omitted)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="e.g. algorithm.group_size=8 rollout.sampling.max_new_tokens=40 model.tiny.hidden_size=128",
    )


def _policy(cfg: RunConfig, turns: int, workdir: Path):
    """(model, layout, model dir, length cap): model.path when set, else the tiny model with room
    for every turn at full length, so no dialogue is cut by the cap."""
    from hpo_ray.model.build import build_tiny_model, load_policy, save_policy
    from hpo_ray.model.tokenizer import train_tokenizer

    def needed(layout: DialogueLayout) -> int:
        per_turn = len(layout.user_ids(cfg.data.turn_frames, first=True)) + cfg.rollout.sampling.reply_budget(cfg.data.multiplier) + 1
        return len(layout.system_ids("en", "de")) + turns * per_turn

    if cfg.model.path is not None:
        model, tok = load_policy(cfg.model.path, "float32", "cpu")
        layout = make_layout(cfg, tok)
        return model, layout, Path(cfg.model.path), min(needed(layout), model.config.max_position_embeddings)
    tok = train_tokenizer(TOKENIZER_TEXTS, vocab_size=cfg.model.tiny.vocab_size, placeholder_token=cfg.model.placeholder_token)
    layout = make_layout(cfg, tok)
    cap = max(cfg.rollout.max_total_tokens, -(-needed(layout) // 256) * 256)
    tiny = cfg.model.tiny.model_copy(update={"max_position_embeddings": max(cfg.model.tiny.max_position_embeddings, cap)})
    model = build_tiny_model(tiny, tok)
    return model, layout, save_policy(model, tok, workdir / "policy"), cap


def _timed(engine, talk: TalkInput, group: int, cfg: RunConfig, seed: int) -> tuple[float, list[Trajectory]]:
    start = time.perf_counter()
    trajs = list(engine.generate([talk], group, cfg.rollout.sampling, seed))
    return time.perf_counter() - start, trajs


def _throughput(stats: dict, wall: float) -> dict:
    """An engine run's share of wall time outside the model's forward calls, and its tokens per second."""
    return {
        "forward_s": stats["forward_seconds"],
        "outside_forward_share": 1 - stats["forward_seconds"] / wall,
        "tokens_per_s": (stats["prefill_tokens"] + stats["decode_tokens"]) / wall,
        "decode_tokens_per_s": stats["decode_tokens"] / wall,
    }


def _agreement(a: list[Trajectory], b: list[Trajectory]) -> tuple[int, int, int]:
    """(sampled tokens equal position by position, sampled tokens in `a`, dialogues identical)."""
    same = total = identical = 0
    for x, y in zip(a, b):
        xs = [t for turn in x.turn_token_ids for t in turn]
        ys = [t for turn in y.turn_token_ids for t in turn]
        same += sum(p == q for p, q in zip(xs, ys))
        total += len(xs)
        identical += x.input_ids == y.input_ids
    return same, total, identical


def _vllm_part(cfg: RunConfig, model_dir: Path, talk: TalkInput, group: int, seed: int, torch_wall: float) -> dict:
    """Part (b); {"vllm_vs_torch": None, "reason": ...} when vLLM cannot run here."""
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # a broken install fails with more than ImportError
        return {"vllm_vs_torch": None, "reason": f"vllm not importable: {type(exc).__name__}: {exc}"}
    from hpo_ray.rollout.vllm_engine import VllmEngine

    start = time.perf_counter()
    engine = VllmEngine.from_config(cfg, model_dir, "cpu")
    init_s = time.perf_counter() - start
    frames = talk.frames[: talk.turn_frames * 2]
    warm = TalkInput("warm-up", "warm-up", talk.src_lang, talk.tgt_lang, frames, talk.turn_frames, multiplier=talk.multiplier)
    start = time.perf_counter()
    list(engine.generate([warm], 2, cfg.rollout.sampling, seed + 1))
    warm_s = time.perf_counter() - start
    wall, trajs = _timed(engine, talk, group, cfg, seed)
    last = engine.stats["last_generate"]
    return {
        "vllm_vs_torch": torch_wall / wall,
        "vllm_wall_s": wall,
        "vllm_init_s": init_s,
        "vllm_warmup_s": warm_s,
        "vllm_prefix_cache_hit_rate": last["prefix_cache_hit_rate"],
        "vllm_generated_tokens": sum(t.num_generated for t in trajs),
        "vllm_turn_hit_rates": last["turn_hit_rates"],
    }


def run(args) -> int:
    # long by its report lines, not its logic: measure side by side, then print each row and the JSON line
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, list(args.overrides))
    s, group = cfg.rollout.sampling, cfg.algorithm.group_size
    width = cfg.data.turn_frames
    with tempfile.TemporaryDirectory(prefix="hpo-bench-rollout-") as tmp:
        model, layout, model_dir, cap = _policy(cfg, args.turns, Path(tmp))
        cfg.rollout.max_total_tokens = cap
        cfg.rollout.vllm.max_model_len = cap
        cfg.model.dtype = "float32"
        model = model.float().eval()
        hidden = model.config.hidden_size
        frames = np.random.default_rng(args.seed).standard_normal((args.turns * width, hidden)).astype(np.float32)
        talk = TalkInput("bench", "bench", "en", "de", frames, width, multiplier=cfg.data.multiplier)
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"rollout bench: 1 talk x {args.turns} turns x G={group}; reply budget={s.reply_budget(cfg.data.multiplier)} tokens/turn "
            f"T={s.temperature} "
            f"top_p={s.top_p} top_k={s.top_k} greedy={s.greedy}; model {model.config.model_type} hidden={hidden} "
            f"layers={model.config.num_hidden_layers} ({n_params / 1e6:.2f} M params) fp32 on CPU, {args.threads} thread(s), "
            f"length cap {cap}"
        )

        kv = TorchEngine(model, layout, cap)
        kv_wall, kv_trajs = _timed(kv, talk, group, cfg, args.seed)
        rp = TorchEngine(model, layout, cap, kv_reuse=False)
        rp_wall, rp_trajs = _timed(rp, talk, group, cfg, args.seed)
        total = sum(len(t.input_ids) for t in kv_trajs)
        through = kv.stats["prefill_tokens"] + kv.stats["decode_tokens"]
        same, sampled, identical = _agreement(kv_trajs, rp_trajs)
        print(
            f"{'engine':<28}{'wall s':>9}{'prefill tok':>13}{'decode tok':>12}{'forwards':>10}{'forward s':>11}"
            f"{'outside fwd':>13}{'tok/s':>10}{'decode tok/s':>14}"
        )
        for name, wall, e in (("torch, persistent KV", kv_wall, kv), ("torch, re-prefill each turn", rp_wall, rp)):
            r = _throughput(e.stats, wall)
            print(
                f"{name:<28}{wall:>9.2f}{e.stats['prefill_tokens']:>13}{e.stats['decode_tokens']:>12}{e.stats['forward_calls']:>10}"
                f"{e.stats['forward_seconds']:>11.2f}{r['outside_forward_share']:>13.3f}{r['tokens_per_s']:>10.0f}{r['decode_tokens_per_s']:>14.0f}"
            )
        print(
            "    outside fwd = 1 - (seconds inside the model's forward calls) / wall: the engine's own overhead "
            "(inputs, sampling, bookkeeping, cache compaction); tok/s counts prefilled + decoded tokens"
        )
        print(f"(a) speedup of persistent KV over re-prefill: {rp_wall / kv_wall:.2f}x")
        print(
            f"    tokens through the KV engine / tokens of the finished dialogues: {through}/{total} = {through / total:.3f} "
            f"(prefilled {kv.stats['prefill_tokens']}, decoded {kv.stats['decode_tokens']})"
        )
        print(
            f"    prefilled tokens, re-prefill / KV: {rp.stats['prefill_tokens']}/{kv.stats['prefill_tokens']} "
            f"= {rp.stats['prefill_tokens'] / kv.stats['prefill_tokens']:.1f}x"
        )
        print(
            f"    sampled tokens agreeing between the two runs: {same}/{sampled} ({identical}/{len(kv_trajs)} dialogues identical); "
            f"truncated dialogues: {sum(t.truncated for t in kv_trajs)}"
        )
        result = {
            "speedup_vs_reprefill": rp_wall / kv_wall,
            "prefill_token_ratio": through / total,
            "reprefill_token_ratio": rp.stats["prefill_tokens"] / kv.stats["prefill_tokens"],
            "torch_kv_wall_s": kv_wall,
            "torch_reprefill_wall_s": rp_wall,
            **_throughput(kv.stats, kv_wall),
            **{f"reprefill_{k}": v for k, v in _throughput(rp.stats, rp_wall).items()},
            "sampled_tokens_agreeing": same,
            "sampled_tokens": sampled,
        }
        if args.skip_vllm:
            vllm_result = {"vllm_vs_torch": None, "reason": "--skip-vllm"}
        else:
            vllm_result = _vllm_part(cfg, model_dir, talk, group, args.seed, kv_wall)
        if vllm_result["vllm_vs_torch"] is None:
            print(f"(b) vLLM vs torch: not measured ({vllm_result['reason']})")
        else:
            v = vllm_result
            print(
                f"(b) vLLM CPU build: {v['vllm_wall_s']:.2f} s (init {v['vllm_init_s']:.1f} s, warm-up {v['vllm_warmup_s']:.1f} s, "
                f"not counted); torch persistent KV {kv_wall:.2f} s -> vllm_vs_torch = torch / vLLM = {v['vllm_vs_torch']:.2f}"
            )
            rates = v.pop("vllm_turn_hit_rates")
            print(
                f"    prefix-cache hit rate {v['vllm_prefix_cache_hit_rate']:.3f} over the talk; per turn: first {rates[0]:.2f}, "
                f"turn 2 {rates[1]:.2f}, last {rates[-1]:.2f}"
            )
        result.update(vllm_result)
    print(json.dumps(result))
    return 0
