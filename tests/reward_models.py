"""Tiny local models for the reward tests, built from configs (nothing is downloaded).

- `build_char_tokenizer`: a character-level Unigram tokenizer (XLM-R or T5 special tokens).
- `build_encoder`: a 2-layer XLM-R encoder with weights (the embedding segmenter's model).
- `build_comet`: a comet RegressionMetric or UnifiedMetric checkpoint directory.
- `build_metricx`: an mT5 model + tokenizer with `<extra_id_10>`, scaled so scores fall inside (0, 25).
"""

import string
from pathlib import Path

import torch
import yaml

CHARS = list(string.ascii_letters + string.digits + string.punctuation) + list(
    "äöüßéèàç。，！？、我你他她的是了不在有人这中大为上个国和们到说时要就出会也你好今天买书本走"
)


def build_char_tokenizer(path: Path, style: str) -> None:
    """Save a tokenizer whose pieces are single characters; style 'xlmr' (<s> a </s>) or 't5' (a </s>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    if style == "xlmr":
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
    else:
        specials = ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(12)]
    pieces = [(s, 0.0) for s in specials] + [("▁", -1.0)] + [(c, -2.0) for c in CHARS]
    if style == "xlmr":
        pieces.append(("<mask>", 0.0))
    vocab = {p: i for i, (p, _) in enumerate(pieces)}
    tok = Tokenizer(models.Unigram(pieces, unk_id=vocab["<unk>"], byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    if style == "xlmr":
        from transformers import XLMRobertaTokenizerFast

        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
        )
        fast = XLMRobertaTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
        )
    else:
        from transformers import PreTrainedTokenizerFast

        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="<pad>",
            additional_special_tokens=[s for s in specials if s.startswith("<extra")],
        )
    fast.save_pretrained(str(path))


def _xlmr_config(vocab_size: int):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def build_encoder(path: Path, seed: int = 0) -> Path:
    """A tiny XLM-R encoder with weights and tokenizer in `path` (AutoModel/AutoTokenizer loadable)."""
    from transformers import AutoTokenizer, XLMRobertaModel

    build_char_tokenizer(path, "xlmr")
    torch.manual_seed(seed)
    XLMRobertaModel(_xlmr_config(len(AutoTokenizer.from_pretrained(str(path))))).save_pretrained(str(path))
    return path


def build_comet(path: Path, kind: str = "regression", seed: int = 0) -> Path:
    """A comet model directory (`checkpoints/model.ckpt` + `hparams.yaml`) whose encoder lives in `path/encoder`."""
    import pytorch_lightning
    from comet.models import RegressionMetric, UnifiedMetric
    from transformers import AutoTokenizer

    encoder = path / "encoder"
    build_char_tokenizer(encoder, "xlmr")
    _xlmr_config(len(AutoTokenizer.from_pretrained(str(encoder)))).save_pretrained(str(encoder))
    torch.manual_seed(seed)
    common = dict(
        encoder_model="XLM-RoBERTa", pretrained_model=str(encoder), load_pretrained_weights=False, local_files_only=True, hidden_sizes=[64]
    )
    if kind == "regression":
        model, identifier = RegressionMetric(layer="mix", **common), "regression_metric"
    else:
        model, identifier = UnifiedMetric(sent_layer="mix", word_layer=2, input_segments=["mt", "src", "ref"], **common), "unified_metric"
    (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": pytorch_lightning.__version__,
        },
        path / "checkpoints" / "model.ckpt",
    )
    (path / "hparams.yaml").write_text(
        yaml.safe_dump(
            {
                "class_identifier": identifier,
                **{k: v for k, v in dict(model.hparams).items() if isinstance(v, (str, int, float, bool, list))},
            }
        )
    )
    return path


def build_metricx(path: Path, seed: int = 0) -> Path:
    """A tiny mT5 'MetricX' with its own (untied) output layer, whose `<extra_id_10>` logit lands near 10."""
    from transformers import AutoTokenizer, MT5Config, MT5ForConditionalGeneration

    build_char_tokenizer(path, "t5")
    tok = AutoTokenizer.from_pretrained(str(path))
    torch.manual_seed(seed)
    config = MT5Config(
        vocab_size=len(tok),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=0,
        tie_word_embeddings=False,
    )
    model = MT5ForConditionalGeneration(config).eval()
    model.lm_head = torch.nn.Linear(config.d_model, config.vocab_size, bias=False)  # MetricX's head is untied
    token = tok.convert_tokens_to_ids("<extra_id_10>")
    with torch.no_grad():
        ids = tok(["source: a candidate: b reference: c"], add_special_tokens=False, return_tensors="pt")["input_ids"]
        hidden = model(
            input_ids=ids, decoder_input_ids=torch.zeros((1, 1), dtype=torch.long), output_hidden_states=True
        ).decoder_hidden_states[-1][0, 0]
        model.lm_head.weight[token] = hidden * (10.0 / hidden.dot(hidden))
    model.save_pretrained(str(path))
    return path
