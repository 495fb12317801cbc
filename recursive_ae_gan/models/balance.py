"""The game's balance policies: each batch, does the discriminator step, and how do the adversarial weights move.

``model.balance`` names one of ``BALANCE_POLICIES``. A policy sees the batch's discriminator logits on every step's
reconstructions before D's step, and the fool rates after the autoencoder's; the per-step adversarial weights are
the module's ``adv_weights`` buffer (in every checkpoint), which only a policy changes. A new policy is a class
here and its entry in ``BALANCE_POLICIES`` (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from recursive_ae_gan.models.divergence import mean_over_ranks
from recursive_ae_gan.models.losses import fake_accuracies

# The weight range of the target policy by reconstruction loss when model.adv_weight_bounds is null: a weight that
# suits BCE wrecks an MSE reconstruction (measured: docs/results.md, "The game").
ADV_WEIGHT_BOUNDS = {"mse": (0.0, 0.1), "bce": (0.0, 1.0)}


@dataclass(frozen=True)
class BalanceSettings:
    """What a policy may use: the target policy's gain and weight range."""

    target_gain: float
    low: float
    high: float


class Alternate:
    """Both networks step every batch; the adversarial weights stay at ``model.adv_weight``."""

    def __init__(self, settings: BalanceSettings) -> None:
        self.settings = settings

    def discriminator_steps(self, fake_logits: torch.Tensor) -> bool:
        """Whether D steps this batch, from its logits ``(S, B)`` on every judged step's reconstructions."""
        return True

    def update(self, adv_weights: torch.Tensor, fool_rates: torch.Tensor) -> None:
        """After the autoencoder's step: move the weights ``(S,)`` in place, given this batch's fool rates ``(S,)``."""


class FreezeWhileAhead(Alternate):
    """The report's rule (``balance=report``): D is frozen while it tells fakes with more than 50% accuracy.

    A branch on the host: one device sync per batch, the price of a data-dependent decision, paid only here.
    Under DDP the accuracies are averaged over the ranks first, so that every rank decides alike."""

    def discriminator_steps(self, fake_logits: torch.Tensor) -> bool:
        return not report_freezes_discriminator(mean_over_ranks(fake_accuracies(fake_logits)))


class TargetFoolRate(Alternate):
    """``balance=target``: each step's weight is steered toward a 50% fool rate (``target_weights``)."""

    def update(self, adv_weights: torch.Tensor, fool_rates: torch.Tensor) -> None:
        s = self.settings
        adv_weights.copy_(target_weights(adv_weights, fool_rates, s.target_gain, s.low, s.high))


BALANCE_POLICIES: dict[str, type[Alternate]] = {
    "alternate": Alternate,
    "report": FreezeWhileAhead,
    "target": TargetFoolRate,
}
BalanceName = Annotated[str, BALANCE_POLICIES]  # model.balance: a key of BALANCE_POLICIES when the config is checked


def report_freezes_discriminator(accuracies: torch.Tensor) -> bool:
    """The report's rule on the steps' ``fake_accuracies``: freeze D while their mean is above 0.5 (a host sync)."""
    return bool(accuracies.mean() > 0.5)


def target_weights(weights: torch.Tensor, rates: torch.Tensor, gain: float, low: float, high: float) -> torch.Tensor:
    """One step of the ``target`` policy: move each step's adversarial weight toward a 50% fool rate.

    A bounded proportional controller (in the spirit of BEGAN's k_t): a step that fools D less
    than half of the time gets a larger weight, one that fools it more gets a smaller one.
    """
    return (weights + gain * (0.5 - rates)).clamp_(low, high)
