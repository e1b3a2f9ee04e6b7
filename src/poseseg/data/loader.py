"""Training batches that are a pure function of (seed, iteration): exact resume, and the same run
with any worker count (0 included: augmentation never touches the trainer's RNG).

The batch sampler fixes which images form batch ``i`` on each rank; every sample's augmentation
is seeded from (seed, batch, slot), so a resumed run sees exactly the batches the uninterrupted
run would have seen. A sample whose image cannot be read is replaced by the next readable one
(deterministically), counted and reported: a long job never dies for one bad image.
"""
from __future__ import annotations

import functools
import logging
import signal
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger(__name__)


class TrainBatchSampler(Sampler):
    """Infinite batches of (index, sample_seed) for one rank, grouped by aspect ratio.

    Epoch e shuffles all images with seed (seed, e), splits them into landscape and portrait
    groups, cuts each group into batches of ``batch_size * world_size``, shuffles the batch order,
    and gives rank r its slice of every global batch. ``start_iter`` skips ahead (resume).
    """

    def __init__(self, aspect_ratios: list[float], *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, start_iter: int = 0):
        if not aspect_ratios:
            raise ValueError("the training set is empty: no image to sample")
        self.landscape = torch.tensor([r >= 1.0 for r in aspect_ratios])  # width >= height
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start_iter = start_iter

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.landscape), generator=g)
        global_bs = self.batch_size * self.world_size
        batches = []
        for group in (order[self.landscape[order]], order[~self.landscape[order]]):
            group = group.tolist()
            if len(group) == 0:
                continue
            if len(group) < global_bs:  # a tiny group still fills whole batches
                group = (group * (global_bs // len(group) + 1))[:global_bs]
            full = len(group) // global_bs * global_bs
            batches += [group[i:i + global_bs] for i in range(0, full, global_bs)]
        perm = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in perm]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        iteration, epoch = 0, 0
        while True:
            for global_batch in self._epoch_batches(epoch):
                if iteration >= self.start_iter:
                    mine = global_batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
                    yield [(idx, _sample_seed(self.seed, iteration, self.rank * self.batch_size + slot))
                           for slot, idx in enumerate(mine)]
                iteration += 1
            epoch += 1


def _sample_seed(seed: int, iteration: int, slot: int) -> int:
    return (seed * 1_000_003 + iteration * 4099 + slot) % (2**63 - 1)


class AugmentedSamples(Dataset):
    """``dataset[i]`` + ``transforms``, seeded per sample; unreadable images are replaced.

    ``dataset`` must raise ImageReadError for an unreadable image (CocoPeopleDataset with
    ``on_bad_image="raise"``) and apply no transforms of its own.
    """

    def __init__(self, dataset, transforms: Callable | None, max_retries: int = 32):
        self.dataset = dataset
        self.transforms = transforms
        self.max_retries = max_retries

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        from poseseg.data.image_io import ImageReadError

        index, seed = key
        skipped = []
        for attempt in range(self.max_retries):
            i = (index + attempt) % len(self.dataset)
            try:
                image, target = self.dataset[i]
            except ImageReadError as e:
                skipped.append(str(e))
                continue
            with torch.random.fork_rng(devices=[]):  # the trainer's RNG stays as it is, with 0 workers too
                torch.manual_seed(seed)
                if self.transforms is not None:
                    image, target = self.transforms(image, target)
            target["skipped_images"] = skipped
            return image, target
        raise RuntimeError(f"{self.max_retries} images in a row could not be read, starting at index {index}: "
                           f"{skipped[:3]}; run `poseseg check-data` on the dataset")


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict]]:
    images, targets = zip(*batch)
    return list(images), list(targets)


def ignore_signals(names: tuple[str, ...], worker_id: int) -> None:
    """A worker's first act: ignore the preemption signals. torchrun and SLURM signal the whole
    process group, and a worker that died of one would abort the step the trainer wants to finish."""
    for name in names:
        signal.signal(signal.Signals[name], signal.SIG_IGN)


def build_train_loader(dataset, transforms: Callable | None, *, batch_size: int, seed: int, rank: int,
                       world_size: int, start_iter: int, num_workers: int,
                       ignore_in_workers: tuple[str, ...] = ()) -> DataLoader:
    landscape = [1.0 if g == 0 else 0.5 for g in dataset.group_ids().tolist()]
    sampler = TrainBatchSampler(landscape, batch_size=batch_size, seed=seed, rank=rank,
                                world_size=world_size, start_iter=start_iter)
    return DataLoader(AugmentedSamples(dataset, transforms), batch_sampler=sampler, collate_fn=collate,
                      num_workers=num_workers, persistent_workers=num_workers > 0,
                      worker_init_fn=functools.partial(ignore_signals, tuple(ignore_in_workers)) if num_workers else None,
                      generator=torch.Generator().manual_seed(seed))  # the main RNG stays untouched
