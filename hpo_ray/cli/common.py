"""Arguments shared by subcommands: `--config FILE` plus trailing `key.path=value` overrides."""

import argparse

from hpo_ray.config import RunConfig, load_config


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--config", required=required, default=None, help="YAML config (defaults when omitted)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. algorithm.kl_coef=0.02")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, args.overrides)
