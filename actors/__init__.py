"""Thin Ray actors over the hpo_ray core, and the controller that drives them."""
