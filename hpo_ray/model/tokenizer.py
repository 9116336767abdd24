"""A byte-level BPE tokenizer trained locally (no hub), with Qwen-style chat special tokens.

Special token names match Qwen's (`<|im_start|>`, `<|im_end|>`, `<|video_pad|>`), so the dialogue
layout addresses a real Qwen3 checkpoint's tokenizer and ours the same way.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# Renders the dialogue layout of hpo_ray.dialogue for messages (user content = placeholder tokens).
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ '<|im_start|>system\\n' + m['content'] + '<|im_end|>' }}"
    "{% elif m['role'] == 'user' %}{{ '\\n<|im_start|>user\\n' + m['content'] + '<|im_end|>\\n<|im_start|>assistant\\n' }}"
    "{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}"
    "{% endfor %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, placeholder_token: str = "<|video_pad|>") -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; every byte is in the alphabet, so any text encodes."""
    specials = [PAD_TOKEN, IM_START, IM_END, placeholder_token]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        bos_token=None,
        additional_special_tokens=[IM_START, placeholder_token],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
