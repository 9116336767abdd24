"""The chunk-causal speech encoder + projector, an HF `PreTrainedModel` built from its config.

log-mel (10 ms) → causal stride-2 convolutions (80 ms frames) → a stack of transformers' Qwen3
decoder layers driven with a block-chunk mask (frames of chunk k attend to chunks k-left..k, never
later ones; rotary positions) → RMSNorm → a projector into the LLM's hidden size: an MLP, or (`ctc`)
the encoder's CTC head over the source words whose posteriors weight a fixed table of word vectors.
`forward` encodes whole padded feature batches (training); `step` encodes one chunk with the
streaming state (inference, `hpo_ray.speech.stream`) and gives the same frames.
"""

from dataclasses import dataclass

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel, Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RMSNorm, Qwen3RotaryEmbedding

from hpo_ray.config import SpeechEncoderConfig

ENCODER_FOLDER = "speech_encoder"


@strict
class ChunkEncoderConfig(PreTrainedConfig):
    """config.json of `speech_encoder/`: front end, subsampling, layer stack and projector shapes."""

    model_type = "hpo_ray_chunk_encoder"
    sample_rate: int = 16000
    n_mels: int = 80
    window_samples: int = 400
    hop_samples: int = 160
    subsampling_layers: int = 3
    conv_channels: int = 64
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    head_dim: int = 32
    intermediate_size: int = 128
    chunk_frames: int = 14
    left_chunks: int = 8
    projector: str = "mlp"
    words: list[str] | None = None  # the `ctc` projector's classes (CTC id = index + 1; 0 is blank)
    llm_hidden_size: int = 64
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0

    @classmethod
    def from_section(cls, section: SpeechEncoderConfig, llm_hidden_size: int, words: list[str] | None = None) -> "ChunkEncoderConfig":
        """The HF config of the encoder described by `model.speech`, projecting to `llm_hidden_size`
        (`words`: the source vocabulary, needed by the `ctc` projector)."""
        fields = section.model_dump(exclude={"seed"})
        return cls(llm_hidden_size=llm_hidden_size, words=list(words) if words else None, **fields)

    @property
    def subsampling(self) -> int:
        """Log-mel frames per encoder frame."""
        return 2**self.subsampling_layers

    @property
    def frame_seconds(self) -> float:
        return self.hop_samples * self.subsampling / self.sample_rate

    @property
    def chunk_samples(self) -> int:
        """Audio samples per encoder chunk."""
        return self.chunk_frames * self.subsampling * self.hop_samples

    def layer_config(self) -> Qwen3Config:
        """The Qwen3 config the layer stack is built from (full attention; the chunk mask does the rest)."""
        cfg = Qwen3Config(
            vocab_size=1,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=1 << 20,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
        )
        cfg._attn_implementation = "eager"
        return cfg


@dataclass
class EncoderState:
    """What a stream carries between chunks: each conv's last input frame, each layer's recent inputs."""

    conv: list[torch.Tensor]
    layers: list[torch.Tensor]
    next_frame: int = 0


class CausalSubsampler(nn.Module):
    """Stride-2 convolutions (kernel 3) whose only padding is one frame of *past* context each."""

    def __init__(self, cfg: ChunkEncoderConfig):
        super().__init__()
        dims = [cfg.n_mels] + [cfg.conv_channels] * cfg.subsampling_layers
        self.convs = nn.ModuleList(nn.Conv1d(dims[i], dims[i + 1], 3, stride=2) for i in range(cfg.subsampling_layers))
        self.out = nn.Linear(cfg.conv_channels, cfg.hidden_size)

    def initial_state(self, batch: int, like: torch.Tensor) -> list[torch.Tensor]:
        return [like.new_zeros(batch, conv.in_channels, 1) for conv in self.convs]

    def forward(self, mel: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """mel [B, T, n_mels] (T a multiple of 2**layers) → [B, T / 2**layers, hidden] and the next state."""
        x, carried = mel.transpose(1, 2), []
        for conv, past in zip(self.convs, state):
            x = torch.cat([past, x], dim=2)
            carried.append(x[:, :, -1:])
            x = nn.functional.gelu(conv(x))
        return self.out(x.transpose(1, 2)), carried


def chunk_mask(query_frames: torch.Tensor, key_frames: torch.Tensor, chunk: int, left: int, dtype) -> torch.Tensor:
    """Additive [1, 1, Tq, Tk] mask: a query in chunk c sees keys in chunks c-left..c only."""
    qc, kc = (query_frames // chunk)[:, None], (key_frames // chunk)[None, :]
    allowed = (kc <= qc) & (kc >= qc - left)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


class ChunkCausalEncoder(PreTrainedModel):
    """Speech encoder + projector: log-mel frames → frames in the LLM's embedding space (80 ms each)."""

    config_class = ChunkEncoderConfig
    base_model_prefix = "speech_encoder"
    main_input_name = "input_features"

    def __init__(self, config: ChunkEncoderConfig):
        super().__init__(config)
        layer_cfg = config.layer_config()
        self.subsample = CausalSubsampler(config)
        self.layers = nn.ModuleList(Qwen3DecoderLayer(layer_cfg, i) for i in range(config.num_layers))
        self.rotary = Qwen3RotaryEmbedding(layer_cfg)
        self.norm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if config.projector == "ctc":
            if not config.words:
                raise ValueError("the ctc projector needs the source words (speech_encoder config 'words'); build it from a train manifest")
            self.ctc_head = nn.Linear(config.hidden_size, len(config.words) + 1)
            # One fixed N(0, 1) vector per class (row 0: blank): frames are posterior-weighted word vectors.
            self.register_buffer("word_table", torch.randn(len(config.words) + 1, config.llm_hidden_size))
            projector = self.ctc_head
        elif config.projector == "mlp":
            self.projector = nn.Sequential(
                nn.Linear(config.hidden_size, config.llm_hidden_size), nn.GELU(), nn.Linear(config.llm_hidden_size, config.llm_hidden_size)
            )
            projector = self.projector
        else:
            raise ValueError(f"speech_encoder config 'projector' is {config.projector!r}; expected 'mlp' or 'ctc'")
        self.post_init()
        # The LLM-style N(0, 0.02) init shrinks the signal through the conv stack; these use torch's fan-in init.
        for module in (*self.subsample.modules(), *projector.modules()):
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                module.reset_parameters()

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Normed encoder states [B, T, hidden] → LLM-space frames [B, T, llm_hidden], frame by frame."""
        if self.config.projector == "ctc":
            return self.ctc_head(h).softmax(-1) @ self.word_table
        return self.projector(h)

    def _attend(self, x: torch.Tensor, frames: torch.Tensor, keep: int, layer: nn.Module) -> torch.Tensor:
        mask = chunk_mask(frames, frames, self.config.chunk_frames, self.config.left_chunks, x.dtype).to(x.device)
        rope = self.rotary(x, frames[None].to(x.device))
        return layer(x, attention_mask=mask, position_embeddings=rope)[:, -keep:]

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        """[B, T, n_mels] (T a multiple of chunk_frames · 2**layers) → [B, T / 2**layers, llm_hidden]."""
        return self.project(self.states(input_features))

    def ctc_logits(self, input_features: torch.Tensor) -> torch.Tensor:
        """The `ctc` projector's head: [B, T, n_mels] → [B, T / 2**layers, len(words) + 1] (blank = 0)."""
        if self.config.projector != "ctc":
            raise ValueError(f"this encoder's projector is {self.config.projector!r}: it has no CTC head of its own")
        return self.ctc_head(self.states(input_features))

    def states(self, input_features: torch.Tensor) -> torch.Tensor:
        """The layer stack's normed output [B, T / 2**layers, hidden] (before the projector)."""
        c = self.config
        if input_features.shape[1] % (c.chunk_frames * c.subsampling):
            raise ValueError(
                f"input_features has {input_features.shape[1]} frames; pad to a multiple of {c.chunk_frames * c.subsampling} (whole chunks)"
            )
        h, _ = self.subsample(input_features, self.subsample.initial_state(input_features.shape[0], input_features))
        frames = torch.arange(h.shape[1])
        for layer in self.layers:
            h = self._attend(h, frames, h.shape[1], layer)
        return self.norm(h)

    def initial_state(self, batch: int = 1) -> EncoderState:
        like = next(self.parameters())
        empty = like.new_zeros(batch, 0, self.config.hidden_size)
        return EncoderState(self.subsample.initial_state(batch, like), [empty] * len(self.layers))

    def step(self, mel_chunk: torch.Tensor, state: EncoderState) -> tuple[torch.Tensor, EncoderState]:
        """One whole chunk of log-mel frames [B, chunk_frames · 2**layers, n_mels] → its frames [B, chunk_frames, llm_hidden].

        Each layer reruns on its cached inputs of the last `left_chunks` chunks plus the new chunk
        and keeps only the new rows: the same keys and values the full-sequence mask allows.
        """
        c = self.config
        if mel_chunk.shape[1] != c.chunk_frames * c.subsampling:
            raise ValueError(f"a chunk is {c.chunk_frames * c.subsampling} log-mel frames, got {mel_chunk.shape[1]}")
        h, conv = self.subsample(mel_chunk, state.conv)
        window = c.left_chunks * c.chunk_frames
        cached = []
        for layer, past in zip(self.layers, state.layers):
            x = torch.cat([past, h], dim=1)
            frames = torch.arange(state.next_frame - past.shape[1], state.next_frame + h.shape[1])
            cached.append(x[:, -window:])
            h = self._attend(x, frames, h.shape[1], layer)
        return self.project(self.norm(h)), EncoderState(conv, cached, state.next_frame + c.chunk_frames)


def build_encoder(section: SpeechEncoderConfig, llm_hidden_size: int, words: list[str] | None = None) -> ChunkCausalEncoder:
    """A freshly initialised encoder + projector (seeded by `model.speech.seed`), in eval mode;
    `words` (the source vocabulary) are the `ctc` projector's classes."""
    if section.projector == "ctc" and not words:
        raise ValueError("model.speech.projector=ctc needs the source words of a train manifest to build the encoder")
    with torch.random.fork_rng():
        torch.manual_seed(section.seed)
        model = ChunkCausalEncoder(ChunkEncoderConfig.from_section(section, llm_hidden_size, words if section.projector == "ctc" else None))
    return model.eval()
