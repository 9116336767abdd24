"""MetricX-24 (an mT5 regression model) from a local path, registered as `metricx`; the reward uses −score, worst −25.

The checkpoint holds the weights of google-research/metricx's `MT5ForRegression`, whose names match
transformers' `MT5ForConditionalGeneration`; its forward is reproduced here: encode
"source: … candidate: … reference: …" (no EOS), run one decoder step from token 0, read the logit of
`<extra_id_10>` (id 250089 in mT5's vocabulary) and clip it to [0, 25].
"""

import logging
from collections.abc import Sequence
from pathlib import Path

from .quality import ScorerSpec, register_scorer

log = logging.getLogger(__name__)

MAX_ERROR = 25.0
SCORE_TOKEN = "<extra_id_10>"


class MetricXScorer:
    """Negated MetricX-24 error (−25 … 0, higher is better), batched with padding."""

    worst = -MAX_ERROR

    def __init__(self, path: Path, tokenizer_path: Path | None, batch_size: int, max_tokens: int, device: str):
        from transformers import AutoTokenizer, MT5ForConditionalGeneration

        for name, p in (("quality_model_path", path), ("quality_tokenizer_path", tokenizer_path or path)):
            if not Path(p).is_dir():
                raise FileNotFoundError(f"reward.{name}: {p} is not a local model directory")
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path or path), local_files_only=True)
        self.model = MT5ForConditionalGeneration.from_pretrained(str(path), local_files_only=True).to(device).eval()
        token_id = self.tokenizer.convert_tokens_to_ids(SCORE_TOKEN)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"MetricX tokenizer at {tokenizer_path or path} has no {SCORE_TOKEN} token")
        self.token_id = int(token_id)
        # MT5ForRegression rescales before a tied output layer. Read the tie off the weights: transformers 5
        # reports tie_word_embeddings=True for every mT5 config but keeps MetricX's distinct lm_head untied.
        self.tied = self.model.lm_head.weight.data_ptr() == self.model.shared.weight.data_ptr()
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.device = device
        self.truncated = 0  # inputs cut at max_tokens so far (the original truncated silently)

    def errors(self, src: Sequence[str], hyp: Sequence[str], ref: Sequence[str]) -> list[float]:
        """MetricX error of each triple, in [0, 25] (lower is better)."""
        import torch

        texts = [f"source: {s} candidate: {h} reference: {r}" for s, h, r in zip(src, hyp, ref)]
        out: list[float] = []
        model = self.model
        for i in range(0, len(texts), self.batch_size):
            ids = self.tokenizer(texts[i : i + self.batch_size], add_special_tokens=False)["input_ids"]
            cut = sum(len(x) > self.max_tokens for x in ids)
            if cut:
                self.truncated += cut
                log.warning("MetricX: %d input(s) truncated to %d tokens", cut, self.max_tokens)
            ids = [x[: self.max_tokens] for x in ids]
            width = max(1, max(len(x) for x in ids))
            pad = self.tokenizer.pad_token_id or 0
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=self.device)
            with torch.inference_mode():
                encoded = model.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
                start = torch.zeros((len(ids), 1), dtype=torch.long, device=self.device)
                decoded = model.decoder(input_ids=start, encoder_hidden_states=encoded, encoder_attention_mask=mask).last_hidden_state
                if self.tied:
                    decoded = decoded * model.config.d_model**-0.5
                logits = model.lm_head(decoded)[:, 0, self.token_id]
            out.extend(float(v) for v in logits.float().clamp(0.0, MAX_ERROR).cpu())
        return out

    def score(self, src: Sequence[str], hyp: Sequence[str], ref: Sequence[str], lang: str) -> list[float]:
        """−MetricX of each triple (the reward's quality)."""
        return [-e for e in self.errors(src, hyp, ref)]


register_scorer(
    ScorerSpec(
        "metricx",
        lambda cfg, device: MetricXScorer(
            cfg.quality_model_path, cfg.quality_tokenizer_path, cfg.quality_batch_size, cfg.quality_max_tokens, device
        ),
        default_target=-5.0,  # the paper's setting
        histogram_bounds=(1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0),
        sign=-1.0,  # observed as the error, −score
        scale="error = -score, 0-25",
        needs_model_path=True,
    )
)
