"""One batch sampler for every data path, and the loaders over it.

``BatchIndexSampler`` yields one index tensor per batch. It decides everything about order:
the epoch's seeded shuffle (a function of ``(seed, epoch)`` only), each DDP rank's share, and
where a resumed epoch continues. The loaders only turn index batches into image batches:

* ``DeviceBatches``: the images live on the accelerator and are indexed there;
* ``BatchLoader``: a ``DataLoader`` over an in-memory tensor or, streaming, over files decoded
  in worker processes.

With ``hflip`` the sampler also decides which training images are mirrored left-right (``epoch_flips``,
a function of ``(seed, epoch)`` too), and the loaders mirror them: on the accelerator for ``DeviceBatches``,
in the main process for ``BatchLoader``.

Both loaders are *stateful* in Lightning's sense (``state_dict`` / ``load_state_dict``): Lightning
stores their position in every checkpoint and hands it back on resume, so a run resumed from a
checkpoint written mid-epoch continues with the next batch of the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of epoch ``epoch``: a function of (seed, epoch) only, so resumable."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of epoch ``epoch``: the first draw of its stream."""
    return torch.randperm(n, generator=epoch_generator(seed, epoch))


def epoch_flips(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Which of the ``n`` training images epoch ``epoch`` mirrors left-right (each with probability 0.5), ``(n,)``
    bool: the draw after the order in the epoch's stream, so the order is the same with flips as without."""
    generator = epoch_generator(seed, epoch)
    torch.randperm(n, generator=generator)  # the order comes first (epoch_permutation)
    return torch.rand(n, generator=generator) < 0.5


def mirror(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """``images`` ``(B, C, H, W)`` with those where ``flips`` ``(B,)`` is true mirrored left-right (vectorised, on
    their device: no host sync)."""
    return torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def training_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``order`` cut into batches; a last batch of one image joins the one before it.

    BatchNorm in training mode cannot normalise a batch of one (``Expected more than 1 value per
    channel``), so a split of ``k * batch_size + 1`` images trains on one batch of ``batch_size + 1``.
    """
    batches = list(order.split(batch_size))
    if batch_size > 1 and len(batches) > 1 and len(batches[-1]) == 1:  # (batch_size=1: every batch is one image)
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


class BatchIndexSampler(Sampler[torch.Tensor]):
    """Index batches of one split for one rank.

    Training (``shuffle=True``, or ``train=True``): the epoch's batches are those of one process
    (:func:`training_batches`), dealt round-robin to the ``world_size`` ranks (rank r takes batches
    r, r + N, ...). DDP needs every rank to step equally often, so when the count does not divide
    evenly the last round wraps around to the epoch's first batches (as ``DistributedSampler`` pads
    with repeated samples). Training batches are shuffled per epoch unless ``shuffle=False`` (Lightning's
    ``overfit_batches``: the same first batches every epoch). With ``hflip`` a pass also sets ``flips``, the
    mask of mirrored images of each of its batches (:func:`epoch_flips` of the batch's images), as it draws its
    first batch; the loaders apply them.
    Evaluation (``train=False``): images in order, cut into ``world_size`` contiguous shares
    without padding, so that every image is evaluated exactly once.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        train: bool | None = None,  # None: a training split when shuffled
        hflip: bool = False,
    ) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.train = shuffle if train is None else train
        self.hflip = hflip
        self.flips: list[torch.Tensor] | None = None  # this pass's masks, one per batch, with hflip
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already done), from a checkpoint
        self.start = 0  # batches of this epoch skipped by the current pass

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def epoch_batches(self) -> list[torch.Tensor]:
        """This rank's batches of the current epoch, all of them."""
        if not self.train:
            share = torch.arange(self.n).tensor_split(self.world_size)[self.rank]
            return list(share.split(self.batch_size))
        order = epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle else torch.arange(self.n)
        batches = training_batches(order, self.batch_size)
        rounds = ceil_div(len(batches), self.world_size)
        padded = [batches[i % len(batches)] for i in range(rounds * self.world_size)]  # fewer batches than ranks too
        return padded[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator: the order is drawn at the first batch, after Lightning's set_epoch and
        # load_state_dict (which on resume both come after iter()).
        batches = self.epoch_batches()
        self.start = 0
        if self.resume_at is not None and self.resume_at[0] == self.epoch:
            self.start = self.resume_at[1]
        self.resume_at = None
        if self.hflip:
            flips = epoch_flips(self.n, self.seed, self.epoch)
            self.flips = [flips[b] for b in batches[self.start :]]
        yield from batches[self.start :]

    def __len__(self) -> int:
        if not self.train:
            share = self.n // self.world_size + (self.rank < self.n % self.world_size)
            return ceil_div(share, self.batch_size)
        merged = self.n > self.batch_size and self.n % self.batch_size == 1  # as in training_batches
        return ceil_div(ceil_div(self.n, self.batch_size) - merged, self.world_size)


class InOrderBatches(BatchIndexSampler, SequentialSampler):
    """A :class:`BatchIndexSampler` that does not shuffle (``shuffle=False``).

    Lightning's ``overfit_batches`` rebuilds every loader whose sampler is not a ``SequentialSampler``
    with one that is, which a loader of this package cannot be rebuilt with; this one tells it that the
    order is already fixed.
    """


def batch_sampler(
    n: int, batch_size: int, train: bool, shuffle: bool, seed: int, rank: int, world_size: int, hflip: bool = False
) -> BatchIndexSampler:
    """The sampler of one split: :class:`InOrderBatches` when it does not shuffle."""
    sampler = BatchIndexSampler if shuffle else InOrderBatches
    return sampler(n, batch_size, shuffle, seed, rank, world_size, train=train, hflip=hflip)


class _Resumable:
    """Counts the batches handed out this epoch; Lightning saves and restores the count."""

    sampler: BatchIndexSampler
    done = 0

    def _counted(self, batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for count, batch in enumerate(batches, start=1):
            self.done = self.sampler.start + count  # start is known once the first batch is drawn
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches_done": self.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at = (state["epoch"], state["batches_done"])


class DeviceBatches(_Resumable):
    """The on-device loader: the images stay on the accelerator and are indexed there."""

    batch_sampler = None  # as a DataLoader with batch_size=None: the sampler yields whole batches (Lightning reads it)

    def __init__(self, images: torch.Tensor, sampler: BatchIndexSampler) -> None:
        self.images, self.sampler = images, sampler

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self._counted(self._batches())

    def _batches(self) -> Iterator[torch.Tensor]:
        batches = list(self.sampler)  # drawn lazily, at the first batch (after set_epoch)
        if not batches:
            return
        sizes = [len(b) for b in batches]
        order = torch.cat(batches).to(self.images.device)  # one host-to-device copy per epoch
        if self.sampler.flips is None:
            yield from (self.images[indices] for indices in order.split(sizes))
            return
        flips = torch.cat(self.sampler.flips).to(self.images.device)  # and one for the epoch's flips
        for indices, mask in zip(order.split(sizes), flips.split(sizes), strict=True):
            yield mirror(self.images[indices], mask)

    def __len__(self) -> int:
        return len(self.sampler)


class BatchLoader(_Resumable, DataLoader):
    """A DataLoader of whole batches: the sampler yields index batches, the dataset returns them stacked."""

    def __init__(self, dataset: Dataset, sampler: BatchIndexSampler, num_workers: int, pin_memory: bool) -> None:
        super().__init__(
            dataset,
            sampler=sampler,
            batch_size=None,  # the sampler already yields whole batches
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            pin_memory=pin_memory,
        )

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator, so that workers start (and draw index batches) at the first batch, after set_epoch
        # and load_state_dict. Counted here, not in the sampler: workers draw ahead of what training consumed.
        batches = super().__iter__()
        yield from self._counted(self._mirrored(batches) if self.sampler.hflip else batches)

    def _mirrored(self, batches: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The batches with the sampler's flips applied; batches arrive in the order the sampler drew them."""
        masks = None
        for images in batches:
            if masks is None:  # the sampler sets them as it draws the pass's first batch
                masks = iter(self.sampler.flips)
            yield mirror(images, next(masks))


class ImageBatches(Dataset):
    """``images[indices]`` for a whole batch of indices at once (in memory)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images[indices]

    def __len__(self) -> int:
        return len(self.images)


class StreamedBatches(Dataset):
    """A batch of items read from disk (in a worker process): ``items[pool_indices[indices]]`` stacked."""

    def __init__(self, items: Dataset, pool_indices: torch.Tensor) -> None:
        self.items, self.pool_indices = items, pool_indices

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.items[int(i)] for i in self.pool_indices[indices]])

    def __len__(self) -> int:
        return len(self.pool_indices)
