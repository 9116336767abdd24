"""Resolution of `reward.device` for the model-based scorers and the embedding encoder."""


def resolve_device(name: str) -> str:
    """`auto` → cuda when a GPU is visible, else cpu; `cuda` without a GPU is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("reward.device=cuda but no CUDA device is visible")
    return name
