"""Per-dialogue bookkeeping shared by the engines: token ids, masks, turn texts, logprobs, and the
context window of inference (which turns the KV cache still holds)."""

from hpo_ray.dialogue import DialogueLayout, TurnSpan
from hpo_ray.rollout.protocol import TalkInput, Trajectory


class DialogueRecorder:
    """Grows one dialogue turn by turn exactly as `DialogueLayout.build` would lay it out.
    `max_new_tokens` is the reply budget of each of its turns (`SamplingConfig.reply_budget` at the talk's multiplier)."""

    def __init__(self, layout: DialogueLayout, talk: TalkInput, sample_index: int, max_total_tokens: int, max_new_tokens: int):
        self.layout, self.talk, self.sample_index = layout, talk, sample_index
        self.max_total_tokens, self.max_new_tokens = max_total_tokens, max_new_tokens
        self.ids = layout.system_ids(talk.src_lang, talk.tgt_lang)
        self.mask = [False] * len(self.ids)
        self.placeholders: list[int] = []
        self.spans: list[TurnSpan] = []
        self.turn_ids: list[list[int]] = []
        self.logprobs: list[float] = []
        self.truncated = False
        self.captured: list = []
        self.n_frames = 0
        self._user_start = self._a_start = self._turn_n = 0
        self.n_system = len(self.ids)
        self.window_turn = 0  # the first turn still in the context; earlier ones were dropped
        self.window_start = self.n_system  # where in `ids` the kept context resumes after the system prompt
        self.window_starts: list[int] = []  # `window_start` at each turn
        self.slid = False  # the window moved: the engine must re-prefill `context_ids()`
        self.slides = 0

    def context_len(self) -> int:
        """Tokens in the context: the system prompt and the kept turns (= len(ids) until a slide)."""
        return self.n_system + len(self.ids) - self.window_start

    def context_ids(self) -> list[int]:
        """The system prompt followed by the kept turns: what the KV cache holds after a re-prefill."""
        return self.ids[: self.n_system] + self.ids[self.window_start :]

    def window_frame_start(self) -> int:
        """The first frame of the kept turns."""
        return sum(s.n_frames for s in self.spans[: self.window_turn])

    def turn_need(self, n_frames: int) -> int:
        """Tokens another user turn plus a full reply (and a closing `<|im_end|>`) can add."""
        return len(self.layout.user_ids(n_frames, first=not self.turn_ids)) + self.max_new_tokens + 1

    def fits(self, n_frames: int) -> bool:
        """Whether another user turn plus a full reply stays within the dialogue's token cap."""
        return self.context_len() + self.turn_need(n_frames) <= self.max_total_tokens

    def slide(self, n_frames: int, keep_tokens: int) -> bool:
        """Bounded context, between turns: if the next turn would not fit, drop the oldest turns until at
        most `keep_tokens` remain and the turn fits (all of them if need be). True when the window moved."""
        need = self.turn_need(n_frames)
        if self.context_len() + need <= self.max_total_tokens:
            return False
        if self.n_system + need > self.max_total_tokens:
            raise ValueError(
                f"talk {self.talk.talk_id!r}: the system prompt and one turn need {self.n_system + need} "
                f"tokens, more than the context window of {self.max_total_tokens} (rollout.context.max_tokens)"
            )
        while self.window_turn < len(self.spans) and (
            self.context_len() > keep_tokens or self.context_len() + need > self.max_total_tokens
        ):
            self.window_turn += 1
            self.window_start = self.spans[self.window_turn].user_start if self.window_turn < len(self.spans) else len(self.ids)
        self.slid, self.slides = True, self.slides + 1
        return True

    def add_user_turn(self, n_frames: int) -> list[int]:
        """Append a user turn; returns its ids (the engine prefills them)."""
        opening = not self.turn_ids
        user = self.layout.user_ids(n_frames, first=opening)
        self._user_start = len(self.ids)
        first = self._user_start + len(self.layout.user_prefix(opening))
        self.placeholders.extend(range(first, first + n_frames))
        self.ids += user
        self.mask += [False] * len(user)
        self.n_frames += n_frames
        self._turn_n = n_frames
        self._a_start = len(self.ids)
        self.turn_ids.append([])
        self.window_starts.append(self.window_start)
        return user

    def add_token(self, token: int, logprob: float) -> None:
        self.ids.append(int(token))
        self.mask.append(True)
        self.logprobs.append(float(logprob))
        self.turn_ids[-1].append(int(token))

    def add_reply(self, tokens: list[int], logprobs: list[float]) -> None:
        """`add_token` for each of a reply's tokens at once."""
        self.ids += tokens
        self.mask += [True] * len(tokens)
        self.logprobs += logprobs
        self.turn_ids[-1] += tokens

    def end_turn(self) -> int | None:
        """Close the reply; returns the `<|im_end|>` id appended (outside the mask) if it was cut."""
        reply = self.turn_ids[-1]
        closed = bool(reply) and reply[-1] == self.layout.end_of_turn_id
        extra = None
        if not closed:
            extra = self.layout.end_of_turn_id
            self.ids.append(extra)
            self.mask.append(False)
        self.spans.append(TurnSpan(self._user_start, self._a_start, self._a_start + len(reply), self._turn_n, not closed))
        return extra

    def trajectory(self, weight_version: int) -> Trajectory:
        return Trajectory(
            talk_id=self.talk.talk_id,
            group_id=self.talk.group_id,
            sample_index=self.sample_index,
            src_lang=self.talk.src_lang,
            tgt_lang=self.talk.tgt_lang,
            input_ids=list(self.ids),
            assistant_mask=list(self.mask),
            placeholder_positions=list(self.placeholders),
            turns=list(self.spans),
            turn_texts=[self.layout.decode(t) for t in self.turn_ids],
            turn_token_ids=[list(t) for t in self.turn_ids],
            logprobs=list(self.logprobs),
            weight_version=weight_version,
            truncated=self.truncated,
            n_frames=self.n_frames,
        )


def partition_live(recs: list[DialogueRecorder], sizes: dict[str, list[int]], turn: int) -> tuple[list[int], list[DialogueRecorder]]:
    """Before turn `turn`: indices of the dialogues that run it, and the dialogues that end now —
    because their talk has no chunk left, or (flagged `truncated`) because the token cap would be hit."""
    keep, ended = [], []
    for i, rec in enumerate(recs):
        todo = sizes[rec.talk.talk_id]
        if turn < len(todo) and rec.fits(todo[turn]):
            keep.append(i)
        else:
            rec.truncated = turn < len(todo)
            ended.append(rec)
    return keep, ended


def slide_windows(recs: list[DialogueRecorder], sizes: dict[str, list[int]], turn: int, keep_tokens: int) -> None:
    """Bounded context, before turn `turn`: each dialogue that has that turn ahead and could not fit it
    drops its oldest turns (`DialogueRecorder.slide`)."""
    for rec in recs:
        todo = sizes[rec.talk.talk_id]
        if turn < len(todo):
            rec.slide(todo[turn], keep_tokens)


def check_positions(context: tuple[int, int] | None, max_positions: int | None) -> None:
    """A context window must stay within the model's position range (the kept window restarts at 0)."""
    if context is not None and max_positions is not None and context[0] > max_positions:
        from hpo_ray.config import ConfigError

        raise ConfigError("rollout.context.max_tokens", f"{context[0]} exceeds the model's max_position_embeddings={max_positions}")
