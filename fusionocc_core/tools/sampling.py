"""Deterministic data order and per-sample seeds, computed from the iteration count alone.

Global sample position g = iteration * global_batch + rank * batch + b walks through one random
permutation of the dataset per epoch (epoch = g // N, permutation seeded by (seed, epoch)); rank r
takes its slice of every global batch, like DistributedSampler. A resumed run therefore sees the
same samples, with the same augmentation seeds, as an uninterrupted one.
"""
from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def seed_from(*parts: int) -> int:
    """A 63-bit seed mixed from integers (stable across processes and Python versions)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32)
               .astype(np.uint64).dot(np.array([1, 1 << 32], dtype=np.uint64)) >> np.uint64(1))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch global generators (used once per sample and per iteration)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


class IterationSampler(Sampler):
    """Yields (dataset index, global position) for iterations [start_iter, max_iters) of one rank."""

    def __init__(self, num_samples: int, batch_size: int, max_iters: int, start_iter: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        if num_samples <= 0:
            raise ValueError("the training set is empty")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.max_iters, self.start_iter = max_iters, start_iter
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self._perm_epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng(seed_from(self.seed, 1, epoch))
            self._perm = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
            self._perm_epoch = epoch
        return self._perm

    def positions(self, iteration: int) -> list[int]:
        """Global positions of this rank's samples at one iteration."""
        base = iteration * self.batch_size * self.world_size + self.rank * self.batch_size
        return [base + b for b in range(self.batch_size)]

    def index_at(self, position: int) -> int:
        return int(self.permutation(position // self.num_samples)[position % self.num_samples])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for it in range(self.start_iter, self.max_iters):
            for pos in self.positions(it):
                yield self.index_at(pos), pos

    def __len__(self) -> int:
        return max(0, self.max_iters - self.start_iter) * self.batch_size


class SeededSamples(Dataset):
    """Wraps a dataset: item (index, position) seeds every global RNG from (seed, position) first,
    so random augmentation depends only on the sample's global position (also in workers)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, position = key
        seed_everything(seed_from(self.seed, 2, position))
        return self.dataset[index]
