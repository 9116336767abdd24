"""`hpo-ray bench NAME`: performance targets measured side by side in one run (never timed tests).

Every benchmark prints a readable table and ends with one JSON object holding its figures.
Benchmarks that need Ray live in hpo_ray/cli (the only place allowed to import it); the rest in
hpo_ray/bench.
"""

import argparse
import importlib
import importlib.util

BENCHMARKS: dict[str, tuple[str, str]] = {
    "reward": ("hpo_ray.bench.reward", "split + resegment + StreamLAAL throughput vs OmniSTEval/mweralign"),
    "rollout": ("hpo_ray.bench.rollout", "persistent-KV torch engine vs re-prefill; vLLM vs torch"),
    "learner": ("hpo_ray.bench.learner", "DeepSpeed ZeRO-2 step vs plain torch AdamW step"),
    "sync": ("hpo_ray.cli.bench_sync", "bucketed weight sync bytes/s vs memcpy"),
    "step": ("hpo_ray.cli.bench_step", "full HPO step phase breakdown and idle bubble share"),
}


class BenchParser(argparse.ArgumentParser):
    """One benchmark's parser: its options come from its module, imported only when that benchmark is the
    one chosen (the modules import torch, transformers or Ray: `hpo-ray bench --help` need not wait for them)."""

    module: str | None = None

    def parse_known_args(self, args=None, namespace=None):
        if self.module is not None:
            module, self.module = self.module, None
            importlib.import_module(module).add_arguments(self)
        return super().parse_known_args(args, namespace)


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="NAME", parser_class=BenchParser)
    for name, (module, help_text) in BENCHMARKS.items():
        if importlib.util.find_spec(module) is None:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_bench_module=module)
        p.module = module


def run(args) -> int:
    return int(importlib.import_module(args._bench_module).run(args) or 0)
