"""The base of every bad-input error: `hpo-ray` prints these as one line and exits 2."""


class InputError(ValueError):
    """User input (config, manifest, model directory, run directory, data file) is wrong; the message names it."""
