"""The divergence check without a host sync per step, and the all-reduce the game's decisions use.

A device-side flag replaces reading every step's loss on the host:

* every optimizer step sets a sticky flag (a 0-dim float tensor on the device) when its loss or its
  gradients are not finite: one device check of both, the step's only cost for this. The flag is the
  optimizer's ``found_inf``, which fused Adam reads on the device as it does under a ``GradScaler``: at 1 it
  skips the whole update (weights, moments and step count). Zeroed gradients would not do: Adam's momentum
  would still move the weights. So from the first non-finite step on, no update is applied, with nothing read
  on the host;
* the host reads the flag every ``every`` batches and before validation or the end of an epoch (one sync),
  together with whether the floating buffers (BatchNorm's running statistics, the game's weights) are
  finite. A read that finds both fine copies the buffers; a read that does not puts the last copy back and
  ends the run with one line naming the first failed check: its epoch, batch, global step and loss. So
  last.ckpt holds the weights from before the failed step and the buffers of the last good read before it
  (the same step when the flag is read every batch, as on the CPU), and no step pays for the copy.

Under DDP the flag is all-reduced (max) on the device, so every rank skips the same steps and
stops at the same batch; the gradients are already the same on every rank after DDP's own all-reduce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.distributed import ReduceOp
from torch.nn.utils import parameters_to_vector, vector_to_parameters


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def all_reduce(tensor: torch.Tensor, op: ReduceOp.RedOpType = ReduceOp.SUM) -> torch.Tensor:
    """``tensor`` reduced over the DDP ranks, in place; itself when not distributed.

    ``torch.distributed.all_reduce`` queues the collective on the device's stream. Lightning's
    ``strategy.reduce`` puts a barrier (a host sync) before each one, which a per-step decision cannot afford.
    """
    if distributed():
        torch.distributed.all_reduce(tensor, op=op)
    return tensor


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the DDP ranks, in place (itself when not distributed): every rank then
    takes the same decision."""
    return all_reduce(tensor).div_(torch.distributed.get_world_size()) if distributed() else tensor


class Check(NamedTuple):
    """One loss to check: where it was and its value (a 0-dim tensor on the device). A tuple: one is made per loss
    and step, and a frozen dataclass is slower to make."""

    what: str
    epoch: int
    batch: int
    global_step: int
    loss: torch.Tensor


@dataclass(frozen=True)
class Checked:
    """One device check: the losses it covered, the values it tested (those losses, then each gradient's sum
    when it guarded an optimizer step) and the flag after it."""

    checks: tuple[Check, ...]
    values: torch.Tensor
    flag: torch.Tensor


class DivergenceGuard:
    """The sticky ``found_inf`` flag of one fit, the checks since the host last read it, the last finite buffers."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.flag = torch.zeros((), device=device)
        self.zero = torch.zeros((), device=device)  # the values' factor in a check: see _check
        self.pending: list[Check] = []  # losses noted since the last device check
        self.checked: list[Checked] = []  # device checks since the last read
        self.buffers = [b for b in module.buffers() if b.is_floating_point()]
        self.finite_buffers = parameters_to_vector(self.buffers) if self.buffers else None

    def check_loss(self, loss: torch.Tensor, what: str, epoch: int, batch: int, global_step: int) -> None:
        """Note ``loss``: the next ``guard_step`` checks it with its gradients in one device check (or the next read,
        if no optimizer step comes first). No device work here, no host sync."""
        self.pending.append(Check(what, epoch, batch, global_step, loss.detach()))

    def guard_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Raise the flag if a loss noted since the last check or a gradient of ``optimizer``'s parameters is not
        finite, and make it ``optimizer``'s ``found_inf``: fused Adam skips its update on the device while it is up.

        One device check per optimizer step: the sum of the losses and of each gradient's sum is finite when every
        one of them is (a finite sum overflows only past ~3e38, which is divergence too). Each gradient's sum is a
        plain reduction, half the cost of its L2 norm (``get_total_norm``) on the CPU (docs/benchmarks.md).
        """
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self._check([c.loss for c in self.pending] + [g.sum() for g in grads])
        optimizer.found_inf = self.flag

    def _check(self, values: list[torch.Tensor]) -> None:
        """One device check of ``values`` (the pending losses first) into a new flag; under DDP it is all-reduced
        (max), so every rank skips the same steps. A new tensor per check, so that each check's flag stays
        readable.

        The flag plus 0 times the values' sum is the flag, or nan when a value is not finite, which becomes 1: two
        plain kernels (``isfinite`` and ``where`` with a number are several each, twice the time here)."""
        stacked = torch.stack(values)
        flag = torch.addcmul(self.flag, stacked.sum(), self.zero).nan_to_num_(nan=1.0)
        self.flag = all_reduce(flag, ReduceOp.MAX)
        self.checked.append(Checked(tuple(self.pending), stacked, self.flag))
        self.pending = []

    def first_failure(self) -> str | None:
        """Read the flag and the buffers' finiteness (one host sync). If both are fine, keep a copy of the
        buffers; else put the last copy back and say which check failed first, e.g. ``"the training loss is
        nan at epoch E, batch B (global step G)"``.

        The checks read are forgotten, so the list holds one window's checks at most."""
        if self.pending:  # losses that no optimizer step checked yet
            self._check([c.loss for c in self.pending])
        checked, self.checked = self.checked, []
        if not checked:  # no check since the last read: nothing can have changed
            return None
        # The flag is the same on every rank (each check all-reduced it); the buffers' sum (finite when every buffer
        # is) is summed over the ranks, so that every rank reads the same and none waits on another.
        buffers = parameters_to_vector(self.buffers) if self.buffers else None
        if buffers is None:
            diverged, bad_buffers = self.flag.item(), False
        else:
            diverged, buffers_sum = all_reduce(torch.stack([self.flag, buffers.sum()])).tolist()
            bad_buffers = not math.isfinite(buffers_sum)
        if not diverged and not bad_buffers:
            if buffers is not None:
                self.finite_buffers = buffers
            return None
        if self.buffers:
            vector_to_parameters(self.finite_buffers, self.buffers)
        if not diverged:
            last = next(c for group in reversed(checked) for c in reversed(group.checks))
            return (
                "a floating buffer (BatchNorm's running statistics) is not finite at epoch "
                f"{last.epoch}, batch {last.batch} (global step {last.global_step})"
            )
        first = checked[int(torch.stack([c.flag for c in checked]).argmax())]  # argmax: the first 1
        values = first.values.tolist()
        losses, gradients = values[: len(first.checks)], values[len(first.checks) :]
        for check, loss in zip(first.checks, losses, strict=True):
            if not math.isfinite(loss):
                return f"the {check.what} is {loss} {where(check)}"
        check = first.checks[-1]  # the loss whose optimizer step it was
        if not all(map(math.isfinite, gradients)):
            return f"the gradients of the {check.what} are not finite (the loss is {losses[-1]}) {where(check)}"
        # The flag is all-reduced: this rank's losses and gradients were fine, another rank's loss was not.
        return f"the {check.what} is not finite on another DDP rank {where(check)}"


def where(check: Check) -> str:
    return f"at epoch {check.epoch}, batch {check.batch} (global step {check.global_step})"
