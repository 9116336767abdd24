"""`hpo-ray doctor [--gpu]`: a short self-check of the rollout engines on this machine.

Builds the tiny model in memory and checks the torch engine (KV reuse exact against a full forward,
bans respected, throughput) and, where vLLM imports, the vLLM engine (same greedy dialogues as the
torch engine, prefix-cache hits, in-place weight load). `--gpu` runs on CUDA in bf16;
without it everything runs on CPU in fp32. Prints one PASS / FAIL / SKIP line per check; exits 1
on any FAIL.
"""

import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

TEXTS = [
    "ka lomi teru sa .",
    "mi tora pelu ka lomi .",
    "sa nuvi ka tora peli mi .",
    "Translate the following speech from English to German.",
] * 8


class _Skip(Exception):
    """A check that cannot run here (not a failure)."""


def add_arguments(parser) -> None:
    parser.add_argument("--gpu", action="store_true", help="run the checks on CUDA in bf16 (fails without a GPU)")
    parser.add_argument("--turns", type=int, default=10, help="turns of the check talk")
    parser.add_argument(
        "--benches",
        action="store_true",
        help="also run `hpo-ray bench learner` and `hpo-ray bench sync` on the same device (own processes) and report their ratios",
    )
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto", help="auto: bf16 with --gpu, fp32 without")


class _Doctor:
    """Shared state of one doctor run: device, dtype, the tiny policy and the engines built so far."""

    def __init__(self, gpu: bool, turns: int, dtype: str, workdir: Path):
        import numpy as np
        import torch

        from hpo_ray.config import TinyModelConfig
        from hpo_ray.dialogue import DialogueLayout
        from hpo_ray.model.build import build_tiny_model, save_policy
        from hpo_ray.model.tokenizer import train_tokenizer
        from hpo_ray.rollout.protocol import TalkInput

        self.torch = torch
        self.device = torch.device("cuda" if gpu else "cpu")
        self.dtype = {"auto": torch.bfloat16 if gpu else torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        low = self.dtype != torch.float32
        self.logit_tol = 0.05 if low else 2e-5  # relative to the largest |logit|: bf16 rounds at ~4e-3 per op
        self.logprob_tol = 0.25 if low else 1e-4
        self.tokenizer = train_tokenizer(TEXTS, vocab_size=320)
        self.layout = DialogueLayout(self.tokenizer)
        base = build_tiny_model(TinyModelConfig(), self.tokenizer)
        with torch.no_grad():  # larger weights than the default init: varied greedy turns
            gen = torch.Generator().manual_seed(0)
            for p in base.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.2, generator=gen)
        self.model_dir = save_policy(base.to(self.dtype), self.tokenizer, workdir / "policy")
        self.model = base.to(self.device).eval()
        rng = np.random.default_rng(0)
        self.talks = [
            TalkInput(f"t{i}", f"g{i}", "en", "de", rng.standard_normal((turns * 14 - 3 * i, 64)).astype(np.float32), 14) for i in range(2)
        ]
        self.vllm = None

    def full_logits(self, model, traj, talk):
        from hpo_ray.dialogue import embed

        torch = self.torch
        ids = torch.tensor([traj.input_ids], device=self.device)
        frames = torch.from_numpy(talk.frames[: traj.n_frames]).to(self.device)
        with torch.no_grad():
            return model(inputs_embeds=embed(model.get_input_embeddings(), ids, frames, self.layout.placeholder_id)).logits[0].float()

    # -- torch engine ------------------------------------------------------------------------
    def torch_kv_exact(self) -> str:
        from hpo_ray.config import SamplingConfig
        from hpo_ray.rollout.torch_engine import TorchEngine

        engine = TorchEngine(self.model, self.layout)
        engine.capture_logits = True
        worst = scale = 0.0
        for traj in engine.generate(self.talks, 2, SamplingConfig(max_new_tokens=6), seed=0):
            pos = [p - 1 for p, m in enumerate(traj.assistant_mask) if m]
            full = self.full_logits(self.model, traj, self.talks[int(traj.talk_id[1:])])[pos]
            worst = max(worst, float((traj.stats["logits"].float() - full).abs().max()))
            scale = max(scale, float(full.abs().max()))
        if worst > self.logit_tol * scale:
            raise AssertionError(f"max |logit(KV) - logit(full forward)| = {worst:.3g} > {self.logit_tol} x {scale:.3g}")
        return f"KV-reuse logits equal a full forward (max diff {worst:.2g}, largest |logit| {scale:.3g}, rel. tol {self.logit_tol})"

    def torch_bans(self) -> str:
        from hpo_ray.config import SamplingConfig
        from hpo_ray.rollout.torch_engine import TorchEngine

        banned = set(self.layout.banned_token_ids(self.model.config.vocab_size))
        trajs = list(
            TorchEngine(self.model, self.layout).generate(self.talks, 4, SamplingConfig(temperature=1.5, max_new_tokens=8), seed=1)
        )
        hit = [t for traj in trajs for turn in traj.turn_token_ids for t in turn if t in banned]
        if hit:
            raise AssertionError(f"banned ids sampled: {sorted(set(hit))[:10]}")
        return f"no banned id among {sum(t.num_generated for t in trajs)} sampled tokens"

    def torch_speed(self) -> str:
        from hpo_ray.config import SamplingConfig
        from hpo_ray.rollout.torch_engine import TorchEngine

        engine = TorchEngine(self.model, self.layout)
        start = time.perf_counter()
        trajs = list(engine.generate(self.talks[:1], 8, SamplingConfig(max_new_tokens=20), seed=2))
        wall = time.perf_counter() - start
        n = sum(t.num_generated for t in trajs)
        threads = f", {self.torch.get_num_threads()} CPU thread(s)" if self.device.type == "cpu" else ""
        return f"{n} tokens in {wall:.2f} s ({n / wall:.0f} tok/s, 8 dialogues x {len(trajs[0].turns)} turns{threads})"

    # -- vLLM engine ---------------------------------------------------------------------------
    def _vllm_engine(self):
        if self.vllm is None:
            try:
                import vllm  # noqa: F401
            except Exception as exc:
                raise _Skip(f"vllm not importable ({type(exc).__name__}: {str(exc)[:80]})") from None
            from hpo_ray.config import load_config
            from hpo_ray.rollout.vllm_engine import VllmEngine

            cfg = load_config(
                None,
                [
                    "rollout.engine=vllm",
                    f"rollout.device={self.device.type}",
                    "model.dtype=" + str(self.dtype).removeprefix("torch."),
                    "rollout.vllm.gpu_memory_utilization=0.3",
                ],
            )
            self.vllm = VllmEngine.from_config(cfg, self.model_dir, self.device.type)
        return self.vllm

    def vllm_matches_torch(self) -> str:
        from hpo_ray.config import SamplingConfig
        from hpo_ray.rollout.torch_engine import TorchEngine

        engine = self._vllm_engine()
        greedy = SamplingConfig(greedy=True, max_new_tokens=8)
        ours = list(engine.generate(self.talks, 2, greedy, seed=0))
        ref = list(TorchEngine(self.model, self.layout).generate(self.talks, 2, greedy, seed=0))
        total = sum(t.num_generated for t in ref)
        differ = sum(a != b for x, y in zip(ours, ref) for a, b in zip(x.input_ids, y.input_ids))
        worst = 0.0  # vLLM's reported logprobs against a torch full forward of vLLM's own dialogues
        from hpo_ray.rollout.sampling import policy_ban_mask, policy_log_probs

        banned = policy_ban_mask(self.layout, self.model.config.vocab_size, self.device)
        for traj in ours:
            pos = [p for p, m in enumerate(traj.assistant_mask) if m]
            logits = self.full_logits(self.model, traj, self.talks[int(traj.talk_id[1:])])[[p - 1 for p in pos]]
            lp = policy_log_probs(logits, banned, 1.0).gather(1, self.torch.tensor(traj.input_ids, device=self.device)[pos][:, None])
            worst = max(worst, float((lp.squeeze(1).cpu() - self.torch.tensor(traj.logprobs)).abs().max()))
        detail = f"{differ} of {total} greedy tokens differ from the torch engine; max |logprob diff| {worst:.2g}"
        if worst > self.logprob_tol or (self.dtype == self.torch.float32 and differ):
            raise AssertionError(detail)
        return detail

    def vllm_prefix_cache(self) -> str:
        rate = self._vllm_engine().stats.get("last_generate", {}).get("turn_hit_rates")
        if not rate:
            raise _Skip("no vLLM generate ran")
        if min(rate[1:]) <= 0:
            raise AssertionError(f"a turn after the first had no prefix-cache hit: {rate}")
        overall = self.vllm.stats["last_generate"]["prefix_cache_hit_rate"]
        return f"prefix-cache hit rate {overall:.2f} (per turn {rate[0]:.2f} .. {rate[-1]:.2f})"

    def vllm_weights(self) -> str:
        from hpo_ray.config import SamplingConfig

        torch = self.torch
        engine = self._vllm_engine()
        old = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        new = {k: (v.float() + 0.05 * torch.randn(v.shape, device=v.device)).to(v.dtype) for k, v in old.items()}
        new["lm_head.weight"] = new["model.embed_tokens.weight"]
        greedy = SamplingConfig(greedy=True, max_new_tokens=6)
        before = [t.input_ids for t in engine.generate(self.talks[:1], 1, greedy, seed=0)]
        start = time.perf_counter()
        engine.load_weights(new.items(), version=1)
        load_s = time.perf_counter() - start
        live = dict(engine.named_weights())
        bad = [k for k in new if not torch.equal(live[k].to(new[k].device, new[k].dtype), new[k])]
        after = [t.input_ids for t in engine.generate(self.talks[:1], 1, greedy, seed=0)]
        engine.load_weights(old.items(), version=0)
        if bad or after == before:
            raise AssertionError(f"weights read back differ for {bad[:3]}" if bad else "outputs unchanged by new weights")
        return f"in-place load took {load_s * 1e3:.0f} ms; weights read back bit-exact; outputs changed"


def run(args) -> int:
    results: list[tuple[str, str, str]] = []

    def check(name: str, fn: Callable[[], str]) -> None:
        try:
            status, detail = "PASS", fn()
        except _Skip as exc:
            status, detail = "SKIP", str(exc)
        except Exception as exc:  # a doctor reports every failure and goes on
            status, detail = "FAIL", f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        results.append((status, name, detail))
        print(f"{status}  {name}: {detail}", flush=True)

    try:
        import torch
    except Exception as exc:
        print(f"FAIL  import torch: {exc}")
        return 1
    print(
        f"torch {torch.__version__}; CUDA available: {torch.cuda.is_available()}"
        + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "")
    )
    if args.gpu and not torch.cuda.is_available():
        print("FAIL  --gpu: no CUDA device visible")
        return 1
    with tempfile.TemporaryDirectory(prefix="hpo-doctor-") as tmp:
        try:
            doc = _Doctor(args.gpu, args.turns, args.dtype, Path(tmp))
        except Exception as exc:
            traceback.print_exc()
            print(f"FAIL  setup (tiny model, hpo_ray imports): {type(exc).__name__}: {exc}")
            return 1
        where = f"{doc.device.type} {str(doc.dtype).removeprefix('torch.')}"
        check(f"torch engine KV reuse [{where}]", doc.torch_kv_exact)
        check(f"torch engine bans [{where}]", doc.torch_bans)
        check(f"torch engine speed [{where}]", doc.torch_speed)
        check(f"vLLM engine equals torch engine [{where}]", doc.vllm_matches_torch)
        check(f"vLLM prefix caching [{where}]", doc.vllm_prefix_cache)
        check(f"vLLM in-place weight load [{where}]", doc.vllm_weights)
        if args.benches:
            check(f"bench learner (ZeRO-2 vs torch AdamW) [{where}]", lambda: _bench_learner(args.gpu))
            check(f"bench sync (bucketed sync vs memcpy) [{doc.device.type}]", lambda: _bench_sync(args.gpu))
    failed = sum(s == "FAIL" for s, _, _ in results)
    print(f"doctor: {sum(s == 'PASS' for s, _, _ in results)} passed, {failed} failed, {sum(s == 'SKIP' for s, _, _ in results)} skipped")
    return 1 if failed else 0


def _bench_json(args: list[str]) -> dict:
    """Run `hpo-ray bench ...` in a subprocess (benchmarks set up process groups); its last JSON line."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "hpo_ray.cli.main", "bench", *args], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return json.loads([line for line in done.stdout.splitlines() if line.strip()][-1])


def _bench_sync(gpu: bool) -> str:
    """`hpo-ray bench sync` on the device: GPU = in-process and CUDA-IPC buckets vs a device memcpy."""
    device = (
        ["--device", "cuda", "--size-mb", "1024", "--bucket-mb", "64,256"]
        if gpu
        else ["--device", "cpu", "--size-mb", "256", "--bucket-mb", "64,256", "--backend", "inprocess,ray"]
    )
    result = _bench_json(["sync", *device, "--repeats", "3"])
    rows = {(r["backend"], r["checksum"]) for r in result["configurations"] if r["vs_memcpy"] >= 0.5}
    detail = (
        f"sync_vs_memcpy {result['sync_vs_memcpy']:.2f} ({result['backend']}, bucket {result['bucket_mb']:g} MB, "
        f"checksum {'on' if result['checksum'] else 'off'}); meeting 0.5: {sorted(rows) or 'none'}"
    )
    if result["sync_vs_memcpy"] < 0.5:
        raise RuntimeError(detail + " — below the 0.5 target")
    return detail


def _bench_learner(gpu: bool) -> str:
    """`hpo-ray bench learner` in a subprocess (it sets up torch.distributed); its headline ratio."""
    device = ["learner.device=cuda", "learner.dtype=bfloat16"] if gpu else ["learner.device=cpu"]
    result = _bench_json(["learner", "--steps", "3", "--warmup", "1", *device])
    if result["zero_vs_torch"] > 1.3:
        raise RuntimeError(f"zero_vs_torch {result['zero_vs_torch']:.2f} > 1.3 (target)")
    return f"zero_vs_torch {result['zero_vs_torch']:.2f} (ZeRO-2 {result['zero_step_s']:.3f} s, torch {result['torch_step_s']:.3f} s)"
