"""HF-format save/load of the tiny speech LLM, and that real Qwen3 directories load unchanged."""

import json

import torch

from hpo_ray.config import TinyModelConfig
from hpo_ray.dialogue import embed
from hpo_ray.model.build import build_tiny_model, load_policy, save_policy


def test_save_then_load_gives_identical_logits(tiny_model, tiny_tokenizer, tmp_path, layout):
    out = save_policy(tiny_model, tiny_tokenizer, tmp_path / "m")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    model, tok = load_policy(out)
    d = layout.build_text("en", "de", [(5, "ka lomi"), (3, "")])
    ids = torch.tensor([d.input_ids])
    frames = torch.randn(d.n_frames, tiny_model.config.hidden_size)
    with torch.no_grad():
        a = tiny_model(inputs_embeds=embed(tiny_model.get_input_embeddings(), ids, frames, layout.placeholder_id)).logits
        b = model(inputs_embeds=embed(model.get_input_embeddings(), ids, frames, layout.placeholder_id)).logits
    assert torch.equal(a, b)
    assert tok.encode("ka lomi .") == tiny_tokenizer.encode("ka lomi .")
    assert tok.chat_template == tiny_tokenizer.chat_template


def test_save_is_atomic_over_an_existing_directory(tiny_model, tiny_tokenizer, tmp_path):
    out = save_policy(tiny_model, tiny_tokenizer, tmp_path / "m")
    save_policy(tiny_model, tiny_tokenizer, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_qwen3_config_built_model_loads_like_a_real_checkpoint(tiny_tokenizer, tmp_path):
    cfg = TinyModelConfig(architecture="qwen3", hidden_size=64, num_heads=2, head_dim=32, num_kv_heads=2)
    save_policy(build_tiny_model(cfg, tiny_tokenizer), tiny_tokenizer, tmp_path / "q3")
    meta = json.loads((tmp_path / "q3" / "config.json").read_text())
    assert meta["architectures"] == ["Qwen3ForCausalLM"] and meta["model_type"] == "qwen3"
    model, _ = load_policy(tmp_path / "q3", dtype="float32")
    assert type(model).__name__ == "Qwen3ForCausalLM"


def test_qwen2_architecture_builds_and_runs(tiny_tokenizer):
    cfg = TinyModelConfig(architecture="qwen2", hidden_size=64, num_heads=2, head_dim=32, num_kv_heads=1)
    model = build_tiny_model(cfg, tiny_tokenizer)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, len(tiny_tokenizer))


def test_building_is_deterministic_for_a_seed(tiny_tokenizer):
    a = build_tiny_model(TinyModelConfig(seed=3), tiny_tokenizer).state_dict()
    b = build_tiny_model(TinyModelConfig(seed=3), tiny_tokenizer).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_few_million_parameter_qwen3_builds_with_vllm_compatible_heads(tiny_tokenizer):
    cfg = TinyModelConfig(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64, intermediate_size=768)
    model = build_tiny_model(cfg, tiny_tokenizer)
    n = sum(p.numel() for p in model.parameters())
    assert 2_000_000 < n < 5_000_000
    assert model.config.head_dim in (32, 64, 80, 96, 112, 128)
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == len(tiny_tokenizer)
