"""The torch rollout engine: batched over dialogues, one persistent KV cache per dialogue.

All live dialogues share one batched cache. A new turn prefills only what the cache lacks (the
reply's last token and the new user turn with its frames) and decoding continues from there;
nothing is recomputed. Rows of different lengths leave masked holes in the cache, which are
compacted away at each turn start. `kv_reuse=False` re-prefills the whole dialogue every turn,
as HF-generate-based multi-turn trainers do (the baseline of `hpo-ray bench rollout`).
"""

import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from hpo_ray.config import SamplingConfig
from hpo_ray.dialogue import DialogueLayout, embed
from hpo_ray.rollout.protocol import TalkInput, Trajectory
from hpo_ray.rollout.recorder import DialogueRecorder, check_positions, partition_live, slide_windows
from hpo_ray.rollout.sampling import policy_ban_mask, policy_log_probs, sample_tokens


class _GrowingLayer(DynamicLayer):
    """A cache layer appending into a buffer grown geometrically, instead of copying the whole
    cache at every step (`torch.cat`); `keys` / `values` stay exact-length views of the buffer."""

    _view: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        past = self.keys.shape[-2] if self.keys.dim() == 4 else 0
        total = past + key_states.shape[-2]
        if self.keys is not self._view or total > self._kbuf.shape[-2]:  # first use, outgrown, or replaced by select/compact
            cap = max(64, 2 * total)
            kbuf = key_states.new_empty(*key_states.shape[:2], cap, key_states.shape[-1])
            vbuf = value_states.new_empty(*value_states.shape[:2], cap, value_states.shape[-1])
            if past:
                kbuf[:, :, :past], vbuf[:, :, :past] = self.keys, self.values
            self._kbuf, self._vbuf = kbuf, vbuf
        self._kbuf[:, :, past:total] = key_states
        self._vbuf[:, :, past:total] = value_states
        self.keys, self.values = self._kbuf[:, :, :total], self._vbuf[:, :, :total]
        self._view = self.keys
        return self.keys, self.values

    def compact_in_place(self, order: torch.Tensor, start: int) -> bool:
        """Compaction inside the buffer: entries `order[:, start:]` move to columns `start...` (the columns before
        `start` hold no hole in any row and stay put), so a turn's compaction copies that turn's columns, not the
        whole cache, and the next update appends without reallocating. False (nothing done) when the buffer is not
        live or is over twice the compacted width (then the caller's copy, of the exact width, frees the slack)."""
        width = order.shape[1]
        if self.keys is not self._view or self._kbuf.shape[-2] > 2 * max(64, width):
            return False
        tail = order[:, start:]
        self._kbuf[:, :, start:width] = _take_entries(self.keys, tail)
        self._vbuf[:, :, start:width] = _take_entries(self.values, tail)
        self.keys, self.values = self._kbuf[:, :, :width], self._vbuf[:, :, :width]
        self._view = self.keys
        return True


class _GrowingCache(DynamicCache):
    """A DynamicCache made of `_GrowingLayer`s."""

    def __init__(self):
        Cache.__init__(self, layer_class_to_replicate=_GrowingLayer)


def _take_entries(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """`t[b, h, order[b, j]]` for a [rows, heads, tokens, dim] cache tensor (= torch.gather on dim 2), copying whole
    `dim`-long rows by their offsets in `t`'s storage: an order of magnitude faster than the gather, and no copy of a
    strided view (the growing buffer's) first."""
    rows, heads, _, dim = t.shape
    if t.stride(3) != 1 or t.stride(2) != dim or t.stride(1) % dim or t.stride(0) % dim:
        t = t.contiguous()
    starts = (torch.arange(rows, device=t.device)[:, None] * (t.stride(0) // dim)) + torch.arange(heads, device=t.device) * (
        t.stride(1) // dim
    )
    index = (starts[:, :, None] + order[:, None, :]).reshape(-1)
    span = (rows - 1) * (t.stride(0) // dim) + (heads - 1) * (t.stride(1) // dim) + t.shape[2]
    as_rows = t.as_strided((span, dim), (dim, 1))
    return as_rows.index_select(0, index).view(rows, heads, order.shape[1], dim)


class _Batch:
    """The shared cache with its key mask and each row's next position and frame cursor."""

    def __init__(self, rows: int, device: torch.device):
        self.cache = _GrowingCache()
        self.key_mask = torch.zeros(rows, 0, dtype=torch.bool, device=device)
        self.next_pos = torch.zeros(rows, dtype=torch.long, device=device)
        self.frames_used = [0] * rows

    def select(self, keep: list[int]) -> None:
        idx = torch.tensor(keep, dtype=torch.long, device=self.key_mask.device)
        if self.key_mask.shape[1]:
            self.cache.batch_select_indices(idx)
        self.key_mask = self.key_mask[idx]
        self.next_pos = self.next_pos[idx]
        self.frames_used = [self.frames_used[i] for i in keep]

    def compact(self) -> None:
        """Move each row's real cache entries to the front (order kept) and trim the common tail."""
        if not self.key_mask.shape[1] or bool(self.key_mask.all()):
            return
        order = torch.sort((~self.key_mask).to(torch.int8), dim=1, stable=True).indices
        width = int(self.key_mask.sum(dim=1).max())
        order = order[:, :width]
        start = int((~self.key_mask.all(dim=0)).nonzero()[0])  # the first column with a hole in some row
        for layer in self.cache.layers:
            if not (isinstance(layer, _GrowingLayer) and layer.compact_in_place(order, start)):
                layer.keys, layer.values = _take_entries(layer.keys, order), _take_entries(layer.values, order)
        self.key_mask = torch.gather(self.key_mask, 1, order)

    def reset_row(self, i: int, frame_start: int) -> None:
        """Empty row `i` (its entries masked, dropped by the next `compact`) to re-prefill it from position 0."""
        self.key_mask[i] = False
        self.next_pos[i] = 0
        self.frames_used[i] = frame_start

    def kv_size(self) -> tuple[int, int, int]:
        """(most tokens any row holds, cache width in tokens, bytes allocated for keys and values)."""
        held = int(self.key_mask.sum(dim=1).max()) if self.key_mask.numel() else 0
        nbytes = sum(
            t.untyped_storage().nbytes() for layer in self.cache.layers for t in (layer.keys, layer.values) if isinstance(t, torch.Tensor)
        )
        return held, int(self.key_mask.shape[1]), nbytes


class TorchEngine:
    """A `RolloutEngine` over a transformers causal LM (CPU or CUDA)."""

    loads_whole_state = False  # a partial load copies just those tensors

    def __init__(
        self, model, layout: DialogueLayout, max_total_tokens: int = 4096, kv_reuse: bool = True, context: tuple[int, int] | None = None
    ):
        """`context` = (max_tokens, keep_tokens) turns on the bounded context of inference (docs/rollout.md §8):
        no dialogue is cut at `max_total_tokens`, the oldest turns leave the cache instead."""
        check_positions(context, getattr(model.config, "max_position_embeddings", None))
        self.model = model.eval()
        self.layout = layout
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.max_total_tokens = max_total_tokens
        self.kv_reuse = kv_reuse
        self.context = context
        self.banned = policy_ban_mask(layout, model.config.vocab_size, self.device)
        self._may_sample_placeholder = not bool(self.banned[layout.placeholder_id])
        self.pad_id = layout.tokenizer.pad_token_id if layout.tokenizer.pad_token_id is not None else layout.end_of_turn_id
        self.weight_version = 0
        self.capture_logits = False  # tests: keep every generation-time logit row on the trajectory
        self.stats = {
            "prefill_tokens": 0,
            "decode_tokens": 0,
            "forward_calls": 0,
            "forward_seconds": 0.0,  # wall time inside the model's forward calls (the rest is the engine's overhead)
            "context_slides": 0,
            "peak_kv_tokens": 0,
            "peak_kv_width": 0,
            "peak_kv_bytes": 0,
        }

    # -- weights ---------------------------------------------------------------------------
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        params = self.model.state_dict()  # views sharing storage with the live (possibly tied) weights
        with torch.no_grad():
            for name, tensor in named_tensors:
                if name not in params:
                    raise KeyError(f"engine model has no weight {name!r}")
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))
        self.weight_version = version

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        yield from self.model.state_dict().items()

    # -- generation ------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, talks: list[TalkInput], samples_per_talk: int, sampling: SamplingConfig, seed: int) -> Iterator[Trajectory]:
        gen = torch.Generator(device=self.device).manual_seed(seed)
        cap = self.max_total_tokens if self.context is None else self.context[0]
        budgets = [sampling.reply_budget(t.multiplier) for t in talks]  # per talk: m × max_new_tokens, or the map's cap
        recs = [DialogueRecorder(self.layout, t, k, cap, n) for t, n in zip(talks, budgets) for k in range(samples_per_talk)]
        frames = {t.talk_id: torch.from_numpy(np.array(t.frames, dtype=np.float32)).to(self.device, self.dtype) for t in talks}
        sizes = {t.talk_id: t.turn_sizes() for t in talks}
        pending: list[list[int]] = [list(r.ids) for r in recs]  # tokens not yet in the cache
        batch = _Batch(len(recs), self.device)
        turn = 0
        while recs:
            if self.context is not None:
                slide_windows(recs, sizes, turn, self.context[1])
            keep, ended = partition_live(recs, sizes, turn)
            for rec in ended:
                yield self._finish(rec)
            if len(keep) < len(recs):
                recs = [recs[i] for i in keep]
                pending = [pending[i] for i in keep]
                batch.select(keep)
            if not recs:
                break
            if not self.kv_reuse:
                batch = _Batch(len(recs), self.device)
            for i, rec in enumerate(recs):
                if rec.slid or not self.kv_reuse:  # re-prefill the kept window at fresh positions
                    batch.reset_row(i, rec.window_frame_start())
                    pending[i] = rec.context_ids()
                    self.stats["context_slides"] += int(rec.slid)
                    rec.slid = False
            batch.compact()
            for i, rec in enumerate(recs):
                pending[i] += rec.add_user_turn(sizes[rec.talk.talk_id][turn])
            logits = self._forward(batch, pending, recs, frames, prefill=True)
            pending = self._decode_turn(batch, recs, logits, frames, sampling, gen)
            turn += 1

    def _decode_turn(self, batch, recs, logits, frames, sampling, gen) -> list[list[int]]:
        """Sample one assistant turn for every row (at most its recorder's `max_new_tokens`); returns each
        row's tokens not yet cached.

        Rows stay on the device as tensors for the whole turn (one host sync per step: did every row
        end?); the recorders get each row's reply in one piece at the end."""
        eot = self.layout.end_of_turn_id
        caps = torch.tensor([rec.max_new_tokens for rec in recs], device=self.device)  # per row: m × the per-chunk budget
        steps = int(caps.max())
        active = torch.ones(len(recs), dtype=torch.bool, device=self.device)
        tokens_by_step, logprobs_by_step, logits_by_step = [], [], []
        for step in range(steps):
            logprobs = policy_log_probs(logits, self.banned, sampling.temperature)
            tokens = sample_tokens(logprobs, sampling, gen)  # every row draws, ended ones too: the generator's stream stays per step
            tokens_by_step.append(tokens)
            logprobs_by_step.append(logprobs.gather(1, tokens[:, None]).squeeze(1))
            if self.capture_logits:
                logits_by_step.append(logits)
            active = active & (tokens != eot) & (caps > step + 1)  # the rows that feed their token back
            if step == steps - 1 or not bool(active.any()):
                break
            logits = self._decode_forward(batch, recs, frames, tokens, active)
        self._account_kv(batch)  # within a turn the cache only grows: its peak is here
        sampled = torch.stack(tokens_by_step, dim=1)
        ended_before = (torch.cumsum((sampled == eot).long(), dim=1) - (sampled == eot).long()) > 0
        counts = torch.minimum((~ended_before).sum(dim=1), caps).tolist()  # a row's reply runs to its first <|im_end|> or its cap
        self.stats["decode_tokens"] += sum(counts) - len(counts)  # each but the reply's last token was fed back
        pending: list[list[int]] = []
        for i, (rec, row, lps, n) in enumerate(zip(recs, sampled.tolist(), torch.stack(logprobs_by_step, dim=1).tolist(), counts)):
            rec.add_reply(row[:n], lps[:n])
            if self.capture_logits:
                rec.captured.extend(step_logits[i] for step_logits in logits_by_step[:n])
            extra = rec.end_turn()
            pending.append([row[n - 1]] + ([extra] if extra is not None else []))
        return pending

    def _decode_forward(self, batch: _Batch, recs, frames, tokens: torch.Tensor, feed: torch.Tensor) -> torch.Tensor:
        """One decode step: each `feed` row's sampled token through the model (the others padded and masked)."""
        if self._may_sample_placeholder:  # a sampled placeholder would take a frame: the general path handles it
            fed = [[t] if f else [] for t, f in zip(tokens.tolist(), feed.tolist())]
            return self._forward(batch, fed, recs, frames, prefill=False)
        ids = torch.where(feed, tokens, self.pad_id)[:, None]
        return self._step(batch, self.model.get_input_embeddings()(ids), feed[:, None])

    def _forward(self, batch: _Batch, new_ids: list[list[int]], recs, frames, prefill: bool) -> torch.Tensor:
        """Run the rows' new tokens (right-padded, pads masked) through the model; last-token logits."""
        width = max(len(ids) for ids in new_ids)
        padded = [row + [self.pad_id] * (width - len(row)) for row in new_ids]
        ids = torch.tensor(padded, dtype=torch.long, device=self.device)
        new_mask = torch.tensor([[k < len(row) for k in range(width)] for row in new_ids], dtype=torch.bool, device=self.device)
        chunks = []
        for i, row in enumerate(new_ids):
            n_ph = row.count(self.layout.placeholder_id)
            if n_ph:
                start = batch.frames_used[i]
                chunks.append(frames[recs[i].talk.talk_id][start : start + n_ph])
                batch.frames_used[i] += n_ph
        ph = torch.cat(chunks) if chunks else torch.zeros(0, self.model.config.hidden_size, device=self.device, dtype=self.dtype)
        if prefill:
            self.stats["prefill_tokens"] += sum(len(row) for row in new_ids)
        return self._step(batch, embed(self.model.get_input_embeddings(), ids, ph, self.layout.placeholder_id), new_mask)

    def _step(self, batch: _Batch, inputs: torch.Tensor, new_mask: torch.Tensor) -> torch.Tensor:
        """The model's forward over the new positions `new_mask` marks, appending them to the cache; last-token logits."""
        lengths = new_mask.sum(dim=1)
        positions = (batch.next_pos[:, None] + torch.cumsum(new_mask.long(), dim=1) - 1).clamp(min=0)
        mask = torch.cat([batch.key_mask, new_mask], dim=1)
        mask_ids = mask.long()
        start = self._clock()
        out = self.model(inputs_embeds=inputs, attention_mask=mask_ids, position_ids=positions, past_key_values=batch.cache, use_cache=True)
        self.stats["forward_seconds"] += self._clock() - start
        self.stats["forward_calls"] += 1
        batch.key_mask = mask
        batch.next_pos = batch.next_pos + lengths
        if new_mask.shape[1] == 1:
            return out.logits[:, 0].float()
        last = (lengths - 1).clamp(min=0)
        return out.logits[torch.arange(len(lengths), device=self.device), last].float()

    def _clock(self) -> float:
        """perf_counter, after the queued GPU work has finished when the model is on CUDA."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _account_kv(self, batch: _Batch) -> None:
        """Peak KV-cache size, measured on the cache itself (tokens per row, width, allocated bytes)."""
        held, width, nbytes = batch.kv_size()
        for key, value in (("peak_kv_tokens", held), ("peak_kv_width", width), ("peak_kv_bytes", nbytes)):
            self.stats[key] = max(self.stats[key], value)

    def _finish(self, rec: DialogueRecorder) -> Trajectory:
        traj = rec.trajectory(self.weight_version)
        traj.stats = {"turns": len(rec.spans), "generated_tokens": len(rec.logprobs)}
        if self.context is not None:
            traj.stats.update(context_slides=rec.slides, window_starts=list(rec.window_starts))
        if self.capture_logits:
            traj.stats["logits"] = torch.stack(rec.captured) if rec.captured else None
        return traj
