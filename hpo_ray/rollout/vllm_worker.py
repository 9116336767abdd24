"""Functions the vLLM engine runs inside vLLM's worker(s) through `LLM.collective_rpc`.

vLLM stores weights in its own format: q/k/v and gate/up projections fused, the vocabulary padded,
and on the CPU build the linear weights repacked into kernel layouts (the parameter left empty).
These helpers translate between that and the Hugging Face names the learner uses. Each takes the
worker as its first argument, as `collective_rpc` requires; only plain tensors cross the boundary.
"""

import torch

_PROBE_ROWS = 1024  # identity rows per probe of a repacked linear layer (bounds the probe's memory)


def _model(worker) -> torch.nn.Module:
    return worker.model_runner.model


def _repacked(module: torch.nn.Module) -> bool:
    """A linear layer whose weight the CPU backend moved into a kernel layout (parameter emptied)."""
    w = getattr(module, "weight", None)
    return hasattr(module, "cpu_linear") and isinstance(w, torch.Tensor) and w.numel() == 0


def uses_kernel_layout(worker) -> bool:
    """Whether any linear weight lives only in a repacked kernel layout (vLLM's CPU build)."""
    return any(_repacked(m) for m in _model(worker).modules())


def _live_weight(module: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The [out, in] weight a linear layer computes with. On the CPU build that is a packed kernel
    copy, read back by applying the kernel to identity rows (x = I gives x @ W.T = W.T exactly:
    each sum holds one product by 1)."""
    if not hasattr(module, "cpu_linear"):
        return module.weight.detach()
    n_in = module.weight.shape[1] if module.weight.numel() else module.input_size_per_partition
    cols = []
    for start in range(0, n_in, _PROBE_ROWS):
        rows = min(_PROBE_ROWS, n_in - start)
        eye = torch.zeros(rows, n_in, dtype=dtype)
        eye[torch.arange(rows), torch.arange(start, start + rows)] = 1
        cols.append(module.cpu_linear(eye, module.weight, None))
    return torch.cat(cols).t()


def _split_sizes(module: torch.nn.Module, n_parts: int) -> list[int]:
    """Output rows of each HF projection fused into `module` (tensor-parallel size 1)."""
    if n_parts == 3:  # QKVParallelLinear
        return [module.num_heads * module.head_size, module.num_kv_heads * module.head_size, module.num_kv_heads * module.v_head_size]
    return list(module.output_sizes)


def hf_weights(worker, vocab_size: int, tied: bool, dtype_name: str) -> dict[str, torch.Tensor]:
    """Every weight under its Hugging Face name, on CPU in the model dtype (fused ones split back,
    vocabulary padding dropped, `lm_head.weight` present when tied, as in an HF state dict)."""
    model = _model(worker)
    dtype = getattr(torch, dtype_name)
    fused = dict(getattr(model, "packed_modules_mapping", {}) or {})
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            for pname, param in list(module.named_parameters(recurse=False)):
                full = f"{name}.{pname}" if name else pname
                if pname == "weight" and "embed_tokens" not in name:
                    tensor = _live_weight(module, dtype)
                else:
                    tensor = param.detach()
                if "embed_tokens" in name or name.endswith("lm_head"):
                    tensor = tensor[:vocab_size]
                leaf = name.rsplit(".", 1)[-1]
                if leaf in fused:
                    parts = fused[leaf]
                    chunks = torch.split(tensor, _split_sizes(module, len(parts)), dim=0)
                    prefix = name[: len(name) - len(leaf)]
                    for part, chunk in zip(parts, chunks):
                        out[f"{prefix}{part}.{pname}"] = chunk.to("cpu", dtype).clone()
                else:
                    out[full] = tensor.to("cpu", dtype).clone()
    head = getattr(model, "lm_head", None)
    if tied and head is not None:  # one shared parameter, but the CPU build computes logits from its own packed copy
        out["lm_head.weight"] = _live_weight(head, dtype)[:vocab_size].to("cpu", dtype).clone()
    return out


def load_hf_weights(worker, named: list[tuple[str, torch.Tensor]]) -> int:
    """Load HF-named weights in place. Repacked (CPU) models go through vLLM's in-place reload, which
    restores, loads and repacks each layer (it needs whole layers); others load straight into the
    live parameters (any subset). Returns how many tensors were passed."""
    if uses_kernel_layout(worker):
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

        worker.reload_weights(weights_iterator=iter(named))
        # Layers that keep their weight (the tied lm_head) still compute with a kernel copy packed
        # at start-up, and the reload skips them: repack them from their (updated) weight.
        for module in _model(worker).modules():
            w = getattr(module, "weight", None)
            if hasattr(module, "cpu_linear") and isinstance(w, torch.Tensor) and w.numel() > 0:
                dispatch_cpu_unquantized_gemm(module, remove_weight=False)
    else:
        _model(worker).load_weights(iter(named))
    return len(named)
