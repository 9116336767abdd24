"""hpo-ray command-line application: the only part of hpo_ray allowed to import ray and actors."""
