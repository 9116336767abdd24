"""Draws P talks per step in a seeded order, reshuffled every epoch, with a resumable position."""

from dataclasses import dataclass

import numpy as np


@dataclass
class SamplerState:
    """Where the sampler is: JSON-safe, saved in checkpoints so a resumed run draws the same talks."""

    epoch: int = 0
    position: int = 0


class TalkSampler:
    """Epoch-wise permutations of talk indices (a fresh shuffle each epoch, unlike the original's one)."""

    def __init__(self, n_talks: int, seed: int, shuffle: bool = True, state: SamplerState | None = None):
        if n_talks <= 0:
            raise ValueError("cannot sample from an empty manifest")
        self.n, self.seed, self.shuffle = n_talks, seed, shuffle
        self.state = state or SamplerState()

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng(np.random.SeedSequence([self.seed, epoch])).permutation(self.n)

    def draw(self, count: int) -> list[int]:
        """The next `count` talk indices (crossing into the next epoch when needed)."""
        out: list[int] = []
        while len(out) < count:
            order = self._order(self.state.epoch)
            take = min(count - len(out), self.n - self.state.position)
            out.extend(int(i) for i in order[self.state.position : self.state.position + take])
            self.state.position += take
            if self.state.position >= self.n:
                self.state = SamplerState(self.state.epoch + 1, 0)
        return out


def step_seed(run_seed: int, step: int, purpose: int = 0) -> int:
    """A per-step seed that depends only on the run seed and the step (so resume repeats it)."""
    return int(np.random.SeedSequence([run_seed, step, purpose]).generate_state(1)[0])
