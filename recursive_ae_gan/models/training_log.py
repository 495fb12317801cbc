"""What a training step logs, kept on the device and handed to Lightning at the logging cadence and at epoch end.

Each ``self.log`` call runs Lightning's result collection in Python (it moves every entry to the value's device; a
torchmetrics ``Metric`` entry is walked whole), and a progress-bar value is read on the host after every batch (a
sync on a GPU): per step, that costs more than a small net's whole step on a GPU (measured: docs/benchmarks.md). The
loggers only ever see the points at ``trainer.log_every_n_steps`` and the epoch means, so the step keeps its values
here and the module hands them to Lightning there.
"""

from __future__ import annotations

import torch

from recursive_ae_gan.core.keys import step_key

Values = dict[str, torch.Tensor]


def logged(values: Values) -> Values:
    """The loggers' keys: a 0-dim value under its key ``train/NAME``, a value per recursion step ``(S,)`` as
    ``step_key("train", i, NAME)`` for each step i."""
    keys = {}
    for key, value in values.items():
        if value.dim() == 0:
            keys[key] = value
        else:
            split, name = key.split("/", 1)
            keys |= {step_key(split, i, name): v for i, v in enumerate(value)}
    return keys


class TrainingLog:
    """The batches' values since the last fold and this epoch's sums, all on the device: nothing is read on the host
    until a logging point (``curves``) or the epoch's end (``epoch_means``), and a batch costs one list append: its
    values are summed in bulk, one stack per key every ``FOLD_EVERY`` batches (a device add per value and batch cost
    the game a dozen small ops a step; measured: docs/benchmarks.md)."""

    FOLD_EVERY = 64  # batches kept before their sums are folded: bounds the memory when logging points are rare

    def __init__(self) -> None:
        self.batches: list[tuple[Values, Values]] = []
        self.last_curves: Values = {}
        self.sums: Values = {}
        self.counts: dict[str, int] = {}

    def record(self, curves: Values, means: Values) -> None:
        """This batch's values, kept as they are (detached when folded): ``curves`` are logged as they are at the
        cadence's points, ``means`` as the epoch's mean over the batches that recorded them (a key may be missing
        in some: R1 when D is frozen). A value its owner changes in place later (a buffer) must come as a copy."""
        self.batches.append((curves, means))
        if len(self.batches) >= self.FOLD_EVERY:
            self.fold()

    @property
    def last(self) -> Values:
        """The last batch's curve values (detached)."""
        curves = self.batches[-1][0] if self.batches else self.last_curves
        return {key: value.detach() for key, value in curves.items()}

    def fold(self) -> None:
        """Add the kept batches' values to the epoch's sums: one stack and sum per key."""
        if not self.batches:
            return
        self.last_curves = self.last
        columns: dict[str, list[torch.Tensor]] = {}
        for _, means in self.batches:
            for key, value in means.items():
                columns.setdefault(key, []).append(value)
        with torch.no_grad():
            for key, values in columns.items():
                total = torch.stack(values).sum(0)
                self.sums[key] = self.sums[key] + total if key in self.sums else total
                self.counts[key] = self.counts.get(key, 0) + len(values)
        self.batches = []

    def curves(self) -> Values:
        """The last batch's curve values on the host, keyed for the loggers: one transfer per logging point, so that
        Lightning's per-batch read of the progress bar's value is a read of host memory."""
        return {key: value.cpu() for key, value in logged(self.last).items()}

    def epoch_means(self) -> Values:
        """This epoch's means, keyed for the loggers (on the device); the sums start again."""
        self.fold()
        means = {key: total / self.counts[key] for key, total in self.sums.items()}
        self.sums, self.counts = {}, {}
        return logged(means)
