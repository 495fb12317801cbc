"""The divergence check without a host sync per step, and the all-reduce the game's decisions use.

A device-side flag replaces reading every step's loss on the host:

* every optimizer step sets a sticky flag (a 0-dim float tensor on the device) when its loss or its
  gradients are not finite. The flag is the optimizer's ``found_inf``, which fused Adam reads on the
  device as it does under a ``GradScaler``: at 1 it skips the whole update (weights, moments and step
  count). Zeroed gradients would not do: Adam's momentum would still move the weights. So from the first
  non-finite step on, no update is applied, with nothing read on the host;
* the host reads the flag every ``every`` batches and before validation or the end of an epoch (one sync),
  together with whether the floating buffers (BatchNorm's running statistics, the game's weights) are
  finite. A read that finds both fine copies the buffers; a read that does not puts the last copy back and
  ends the run with one line naming the first failed check: its epoch, batch, global step and loss. So
  last.ckpt holds the weights from before the failed step and the buffers of the last good read before it
  (the same step when the flag is read every batch, as on the CPU), and no step pays for the copy.

Under DDP the loss's flag is all-reduced (max) on the device, so every rank skips the same steps and
stops at the same batch; the gradients are already the same on every rank after DDP's own all-reduce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.distributed import ReduceOp
from torch.nn.utils import get_total_norm, parameters_to_vector, vector_to_parameters


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


@dataclass(frozen=True)
class Check:
    """One checked step: where it was, its loss and the flag after it (all tensors stay on the device)."""

    what: str
    epoch: int
    batch: int
    global_step: int
    loss: torch.Tensor
    flag: torch.Tensor
    gradients: bool = False  # the check of the loss's gradients, not of the loss itself


class DivergenceGuard:
    """The sticky ``found_inf`` flag of one fit, the checks since the host last read it, the last finite buffers."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.flag = torch.zeros((), device=device)
        self.checks: list[Check] = []
        self.buffers = [b for b in module.buffers() if b.is_floating_point()]
        self.finite_buffers = parameters_to_vector(self.buffers) if self.buffers else None

    def check_loss(self, loss: torch.Tensor, what: str, epoch: int, batch: int, global_step: int) -> None:
        """Raise the flag (on the device) if ``loss`` is not finite; no host sync."""
        loss = loss.detach()
        self.flag = all_reduce(torch.where(torch.isfinite(loss), self.flag, 1.0), ReduceOp.MAX)
        self.checks.append(Check(what, epoch, batch, global_step, loss, self.flag))

    def guard_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Raise the flag if a gradient is not finite, and make it ``optimizer``'s ``found_inf``: fused Adam
        skips its update on the device while it is up.

        The gradients' L2 norm (``get_total_norm``: torch's foreach kernels, no host sync) is finite when every
        gradient is, and overflows only past ~1e19, which is divergence too; the inf norm said the same at 28x the
        cost on the CPU (docs/benchmarks.md).
        """
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # A new tensor per check, so that each check's flag stays readable.
        flag = torch.where(torch.isfinite(get_total_norm(grads, 2.0)), self.flag, 1.0)
        self.checks.append(replace(self.checks[-1], flag=flag, gradients=True))  # the loss checked last
        self.flag = optimizer.found_inf = flag

    def first_failure(self) -> str | None:
        """Read the flag and the buffers' finiteness (one host sync). If both are fine, keep a copy of the
        buffers; else put the last copy back and say which check failed first, e.g. ``"the training loss is
        nan at epoch E, batch B (global step G)"``.

        The checks read are forgotten, so the list holds one window's checks at most."""
        checks, self.checks = self.checks, []
        if not checks:  # no check since the last read: nothing can have changed
            return None
        buffers = parameters_to_vector(self.buffers) if self.buffers else self.flag.new_zeros(0)
        state = all_reduce(torch.stack([self.flag, (~torch.isfinite(buffers).all()).float()]), ReduceOp.MAX)
        diverged, bad_buffers = state.tolist()  # under DDP every rank reads the same: none waits on another
        if not diverged and not bad_buffers:
            self.finite_buffers = buffers
            return None
        if self.buffers:
            vector_to_parameters(self.finite_buffers, self.buffers)
        if not diverged:
            last = checks[-1]
            return (
                "a floating buffer (BatchNorm's running statistics) is not finite at epoch "
                f"{last.epoch}, batch {last.batch} (global step {last.global_step})"
            )
        first = checks[int(torch.stack([c.flag for c in checks]).argmax())]  # argmax: the first 1
        where = f"at epoch {first.epoch}, batch {first.batch} (global step {first.global_step})"
        loss = first.loss.item()
        if first.gradients:
            return f"the gradients of the {first.what} are not finite (the loss is {loss}) {where}"
        if math.isfinite(loss):  # the flag is all-reduced: this rank's loss was fine, another's was not
            return f"the {first.what} is not finite on another DDP rank {where}"
        return f"the {first.what} is {loss} {where}"
