"""Benchmarks behind `hpo-ray bench`: each prints side-by-side ratios and ends with one JSON line."""
