"""Manifests and speech features: what a talk is, loaded lazily and validated up front."""
