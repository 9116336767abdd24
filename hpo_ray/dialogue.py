"""The dialogue layout: the one place that knows how a talk becomes a token sequence.

    <|im_start|>system\n{instruction}<|im_end|>
    {first}<|im_start|>user\n[F × placeholder]<|im_end|>\n<|im_start|>assistant\n{text}<|im_end|>
    {later}<|im_start|>user\n[F × placeholder]<|im_end|>\n<|im_start|>assistant\n{text}<|im_end|>  ...

A user turn carries the next chunk of frames; an assistant turn is a partial translation or
nothing (just `<|im_end|>` = wait). The separators {first} (after the system turn) and {later}
(after an assistant turn) are read from the tokenizer's chat template: Qwen's and our tiny
tokenizer's render "\n" for both; the original's RL layout had "\n" only before the first user
turn. The sequence ends after the last assistant turn: no trailing unused user turn (the original
appended one, docs/method.md §11.2). Token ids are built from explicit templates, never by decoding and
re-encoding text. `embed` puts frame k at the k-th placeholder using the model's own (single)
input-embedding table in every engine and in the learner.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from hpo_ray.config import RunConfig

LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "zh": "Chinese",
    "ja": "Japanese",
    "es": "Spanish",
    "fr": "French",
    "it": "Italian",
    "ko": "Korean",
    "ru": "Russian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "ar": "Arabic",
}
IM_START = "<|im_start|>"
_MARKS = {"system": "hpo-system-mark", "user": "hpo-user-mark", "assistant": "hpo-assistant-mark"}


def turn_separators(tokenizer: PreTrainedTokenizerBase, end_of_turn_token: str) -> tuple[str, str]:
    """The text the chat template renders before `<|im_start|>user` after the system turn and after
    an assistant turn, read from a rendered system/user/assistant/user conversation."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat_template: the dialogue layout reads its turn separators "
            "from it (save the checkpoint's tokenizer with its chat template)"
        )
    roles = ["system", "user", "assistant", "user"]
    text = tokenizer.apply_chat_template([{"role": r, "content": _MARKS[r]} for r in roles], tokenize=False)
    header = IM_START + "user\n"

    def before_user_after(mark: str) -> str:
        start = text.index(end_of_turn_token, text.index(mark)) + len(end_of_turn_token)
        stop = text.find(header, start)
        if stop < 0 or IM_START in text[start:stop]:
            raise ValueError(f"the chat template does not render {header!r} after the {mark!r} turn: unsupported layout {text!r}")
        return text[start:stop]

    expected = end_of_turn_token + "\n" + IM_START + "assistant\n"
    if _MARKS["user"] + expected not in text:
        raise ValueError(f"the chat template does not end a user turn with {expected!r}: unsupported layout {text!r}")
    return before_user_after(_MARKS["system"]), before_user_after(_MARKS["assistant"])


@dataclass(frozen=True)
class TurnSpan:
    """Token positions of one user turn and the assistant reply that follows it."""

    user_start: int
    assistant_start: int
    assistant_end: int
    n_frames: int
    truncated: bool = False


@dataclass(frozen=True)
class Dialogue:
    """A laid-out dialogue: ids, which tokens the policy wrote, where frames go, turn boundaries."""

    input_ids: list[int]
    assistant_mask: list[bool]
    placeholder_positions: list[int]
    turns: list[TurnSpan]

    @property
    def n_frames(self) -> int:
        return len(self.placeholder_positions)


class DialogueLayout:
    """Builds and parses dialogue token sequences for one tokenizer."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        placeholder_token: str = "<|video_pad|>",
        end_of_turn_token: str = "<|im_end|>",
        instruction: str = "Translate the following speech from {src} to {tgt}.",
    ):
        self.tokenizer = tokenizer
        self.instruction = instruction
        self.placeholder_id = self._special_id(placeholder_token)
        self.end_of_turn_id = self._special_id(end_of_turn_token)
        self.im_start_id = self._special_id(IM_START)
        first, later = turn_separators(tokenizer, end_of_turn_token)
        header = [self.im_start_id] + self.encode("user\n")
        self.first_user_prefix = self.encode(first) + header  # after the system turn
        self.later_user_prefix = self.encode(later) + header  # after an assistant turn
        self.user_suffix = [self.end_of_turn_id] + self.encode("\n") + [self.im_start_id] + self.encode("assistant\n")

    def _special_id(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id or self.tokenizer.convert_ids_to_tokens(tid) != token:
            raise ValueError(f"tokenizer has no token {token!r} (check model.placeholder_token / end_of_turn_token)")
        return int(tid)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids, special tokens dropped."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def system_ids(self, src_lang: str, tgt_lang: str) -> list[int]:
        text = self.instruction.format(src=LANGUAGE_NAMES.get(src_lang, src_lang), tgt=LANGUAGE_NAMES.get(tgt_lang, tgt_lang))
        return [self.im_start_id] + self.encode("system\n" + text) + [self.end_of_turn_id]

    def user_prefix(self, first: bool) -> list[int]:
        """The ids before a user turn's placeholders: separator and user header."""
        return self.first_user_prefix if first else self.later_user_prefix

    def user_ids(self, n_frames: int, first: bool) -> list[int]:
        """A user turn with `n_frames` placeholders, ending with the assistant header; `first` is the
        turn right after the system turn."""
        if n_frames <= 0:
            raise ValueError(f"a user turn needs at least one frame, got {n_frames}")
        return self.user_prefix(first) + [self.placeholder_id] * n_frames + self.user_suffix

    def assistant_ids(self, text: str) -> list[int]:
        """A complete assistant turn for `text` ("" = wait)."""
        return self.encode(text) + [self.end_of_turn_id]

    def build(self, src_lang: str, tgt_lang: str, turns: Sequence[tuple[int, Sequence[int]]]) -> Dialogue:
        """Lay out (n_frames, generated ids) turns. A reply not ending in `<|im_end|>` was cut at the
        token cap: `<|im_end|>` is appended outside the assistant mask to keep the layout well formed."""
        ids = self.system_ids(src_lang, tgt_lang)
        mask = [False] * len(ids)
        placeholders: list[int] = []
        spans: list[TurnSpan] = []
        for n_frames, reply in turns:
            user_start = len(ids)
            user = self.user_ids(n_frames, first=not spans)
            first = user_start + len(self.user_prefix(not spans))
            placeholders.extend(range(first, first + n_frames))
            ids += user
            mask += [False] * len(user)
            reply = list(reply)
            if self.end_of_turn_id in reply[:-1]:
                raise ValueError("an assistant reply may contain <|im_end|> only as its last token")
            a_start = len(ids)
            ids += reply
            mask += [True] * len(reply)
            truncated = not reply or reply[-1] != self.end_of_turn_id
            if truncated:
                ids.append(self.end_of_turn_id)
                mask.append(False)
            spans.append(TurnSpan(user_start, a_start, a_start + len(reply), n_frames, truncated))
        return Dialogue(ids, mask, placeholders, spans)

    def build_text(self, src_lang: str, tgt_lang: str, turns: Sequence[tuple[int, str]]) -> Dialogue:
        """Lay out (n_frames, reply text) turns, e.g. SFT data."""
        return self.build(src_lang, tgt_lang, [(n, self.assistant_ids(text)) for n, text in turns])

    def parse(self, input_ids: Sequence[int]) -> tuple[list[int], list[tuple[int, list[int]]]]:
        """Inverse of `build`: (system ids, [(n_frames, reply ids incl. <|im_end|>)])."""
        ids = list(input_ids)
        if not ids or ids[0] != self.im_start_id:
            raise ValueError("dialogue must start with <|im_start|>")
        end = ids.index(self.end_of_turn_id) + 1
        system, pos, turns = ids[:end], end, []
        suf = self.user_suffix
        while pos < len(ids):
            pre = self.user_prefix(not turns)
            if ids[pos : pos + len(pre)] != pre:
                raise ValueError(f"expected a user turn at token {pos}")
            pos += len(pre)
            n = 0
            while pos < len(ids) and ids[pos] == self.placeholder_id:
                n, pos = n + 1, pos + 1
            if ids[pos : pos + len(suf)] != suf:
                raise ValueError(f"malformed user turn ending at token {pos}")
            pos += len(suf)
            try:
                stop = ids.index(self.end_of_turn_id, pos) + 1
            except ValueError:
                raise ValueError(f"assistant turn starting at token {pos} has no <|im_end|>") from None
            turns.append((n, ids[pos:stop]))
            pos = stop
        return system, turns

    def banned_token_ids(self, vocab_size: int) -> list[int]:
        """Ids never sampled from a model whose logits span `vocab_size` ids: every token whose text
        contains a newline, every special token but end-of-turn (the original banned only "\\n" and
        " \\n", docs/method.md §11.9), and every padding row of the embedding matrix (id ≥ len(tokenizer))."""
        tok = self.tokenizer
        if vocab_size < len(tok):
            raise ValueError(f"the model's vocab_size {vocab_size} is below the tokenizer's {len(tok)} tokens")
        special = set(tok.all_special_ids) | {int(i) for i in getattr(tok, "added_tokens_decoder", {})}
        banned = {i for i in special if i != self.end_of_turn_id}
        for i in range(len(tok)):
            if i not in banned and i != self.end_of_turn_id and "\n" in tok.decode([i]):
                banned.add(i)
        return sorted(banned | set(range(len(tok), vocab_size)))


def embed(embedding: torch.nn.Module, input_ids: torch.Tensor, frames: torch.Tensor, placeholder_id: int) -> torch.Tensor:
    """Token embeddings with frame k written at the k-th placeholder (row-major) and nowhere else.

    `embedding` is the model's input-embedding module (`model.get_input_embeddings()`); `frames`
    is [n_placeholders, hidden]. Gradients flow into the table for every non-placeholder token.
    """
    embeds = embedding(input_ids)
    mask = input_ids == placeholder_id
    n = int(mask.sum())
    if frames.dim() != 2 or frames.shape[0] != n or frames.shape[1] != embeds.shape[-1]:
        raise ValueError(f"frames must be [{n}, {embeds.shape[-1]}] to fill {n} placeholders, got {tuple(frames.shape)}")
    return embeds.masked_scatter(mask.unsqueeze(-1), frames.to(device=embeds.device, dtype=embeds.dtype))


def make_layout(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase) -> DialogueLayout:
    """The dialogue layout the config describes (`model.placeholder_token`, ...), for `tokenizer`."""
    m = cfg.model
    return DialogueLayout(tokenizer, m.placeholder_token, m.end_of_turn_token, m.instruction)
