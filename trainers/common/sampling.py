"""Sample keys and the torch loader both trainers use.

A training sample depends only on its key (which item, plus a seed for every random choice), never on
the worker that makes it. ``ResumableSampler`` draws one epoch's keys from (seed, epoch) alone, so a
resumed run sees the same stream and leaves out what it already trained on; each family's sampler
(heatmap_paf.datasets.MixtureSampler, deeppose.data.KeySampler) says how one epoch's keys are drawn.
``build_loader`` batches the samples in persistent worker processes.
"""
from __future__ import annotations

import cv2
import torch


class ResumableSampler(torch.utils.data.Sampler):
    """``samples`` keys per epoch that depend only on (seed, epoch): a resumed run draws the same epoch and
    leaves out the keys it already trained on. Subclasses say how one epoch's keys are drawn."""

    def __init__(self, samples: int, seed: int):
        self.samples = samples
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Draw epoch ``epoch``'s keys, leaving out the first ``skip`` (already trained on before a resume)."""
        self.epoch = epoch
        self.skip = skip

    def __len__(self) -> int:
        return self.samples - self.skip

    def __iter__(self):
        yield from self.epoch_keys()[self.skip:]

    def epoch_keys(self) -> list[tuple[int, ...]]:
        raise NotImplementedError


def _worker_init(_worker_id: int) -> None:
    # Each worker makes whole samples; threads inside a worker would only fight the training step for cores.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def build_loader(dataset: torch.utils.data.Dataset, sampler: ResumableSampler, batch_size: int, workers: int,
                 pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Batches of ``dataset[key]`` for the sampler's keys, made by ``workers`` persistent processes.

    Workers start from a fresh forkserver process, not a fork of this one: a fork of a process whose
    OpenCV or OpenMP thread pools have run deadlocks in the child on the first resize. Whatever the dataset
    holds in shared memory (deeppose's image bank) travels to them as a handle, not a copy.
    """
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        persistent_workers=workers > 0, worker_init_fn=_worker_init if workers > 0 else None,
        multiprocessing_context="forkserver" if workers > 0 else None, drop_last=True, pin_memory=pin_memory)
