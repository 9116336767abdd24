"""`hpo-ray config --config X [overrides]`: validate and print the resolved config as YAML."""

from hpo_ray.cli.common import add_config_arguments, config_from_args
from hpo_ray.config import to_yaml


def add_arguments(parser) -> None:
    add_config_arguments(parser)


def run(args) -> int:
    print(to_yaml(config_from_args(args)), end="")
    return 0
