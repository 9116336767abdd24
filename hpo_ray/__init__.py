"""hpo-ray core: everything that computes. Never imports `ray` or `actors` (only `hpo_ray.cli` may)."""

__version__ = "0.1.0"
