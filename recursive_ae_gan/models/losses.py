"""Reconstruction and adversarial losses, and the game's statistics.

Pure functions on logits, so that they are easy to test and stay safe under autocast.
Shapes: images ``(B, C, H, W)``; per recursion step stacked as ``(S, B, C, H, W)``;
discriminator logits ``(B,)`` for real images and ``(S, B)`` for the S judged steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F


def cycle_depths(batch_size: int, depth: int, batch_idx: int, device: torch.device | None = None) -> torch.Tensor:
    """The report's depth cycling (section 4.3): the step each image of a training batch trains.

    Image j of batch i trains step ``(i + j) mod (depth + 1)``: within a batch the steps take turns,
    and each batch starts one step later than the one before. Over any ``depth + 1`` consecutive
    batches of size B, every step trains exactly B images: a share of 1 / (depth + 1) each.
    """
    return (torch.arange(batch_size, device=device) + batch_idx) % (depth + 1)  # made on the device: no copy


def reconstruction_losses(
    logits: torch.Tensor, target: torch.Tensor, kind: str, depths: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean reconstruction loss of each step: ``(S, B, C, H, W)`` logits -> ``(S,)``.

    ``bce`` uses the logits form (safe under bf16 autocast); ``mse`` compares sigmoid images.
    With ``depths`` ``(B,)``, step s averages only over the images whose depth is s (0 if none).
    """
    target = target.unsqueeze(0).expand_as(logits)
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    elif kind == "mse":
        per_pixel = (torch.sigmoid(logits.float()) - target).square()
    else:
        raise ValueError(f"unknown reconstruction loss {kind!r}: mse or bce")
    if depths is None:
        return per_pixel.flatten(1).mean(1)
    per_image = per_pixel.flatten(2).mean(2)  # (S, B)
    chosen = depths.unsqueeze(0) == torch.arange(len(logits), device=depths.device).unsqueeze(1)  # (S, B)
    return (per_image * chosen).sum(1) / chosen.sum(1).clamp_min(1)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE of D: real images -> 1, every judged step's reconstructions -> 0."""
    real = F.softplus(-real_logits.float()).mean()  # -log D(x)
    fake = F.softplus(fake_logits.float()).mean()  # -log(1 - D(x'))
    return 0.5 * (real + fake)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The hinge loss of D (taming-transformers', SAGAN's): real logits pushed above 1, fake ones below -1."""
    return 0.5 * (F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean())


def minimax_generator_losses(fake_logits: torch.Tensor) -> torch.Tensor:
    """The report's ``log(1 - D(x'))`` per judged step (= ``-softplus(logit)``), minimised: ``(S, B)`` -> ``(S,)``."""
    return -F.softplus(fake_logits.float()).mean(1)


def non_saturating_generator_losses(fake_logits: torch.Tensor) -> torch.Tensor:
    """``-log D(x')`` per judged step (= ``softplus(-logit)``), whose gradient does not vanish when D is sure."""
    return F.softplus(-fake_logits.float()).mean(1)


def hinge_generator_losses(fake_logits: torch.Tensor) -> torch.Tensor:
    """The hinge game's generator loss per judged step: ``-D(x')``, its logit."""
    return -fake_logits.float().mean(1)


@dataclass(frozen=True)
class GameLoss:
    """One adversarial loss: D's (real logits ``(B,)``, fake logits ``(S, B)`` -> a scalar) and the autoencoder's
    per judged step (fake logits ``(S, B)`` -> ``(S,)``)."""

    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]


# model.adv_loss: the losses of the game.
GAME_LOSSES = {
    "minimax": GameLoss(discriminator_loss, minimax_generator_losses),
    "non_saturating": GameLoss(discriminator_loss, non_saturating_generator_losses),
    "hinge": GameLoss(hinge_discriminator_loss, hinge_generator_losses),
}
GameLossName = Annotated[str, GAME_LOSSES]  # model.adv_loss: a key of GAME_LOSSES when the config is checked


def generator_losses(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The autoencoder's adversarial loss per judged step under ``model.adv_loss=kind``: ``(S, B)`` -> ``(S,)``."""
    return GAME_LOSSES[kind].generator(fake_logits)


def r1_penalty(real_logits: torch.Tensor, reals: torch.Tensor, gamma: float) -> torch.Tensor:
    """The R1 penalty (Mescheder et al. 2018): ``gamma / 2`` times the mean squared norm of D's gradient on the real
    images ``reals`` (which require grad; ``real_logits`` are D's on them). The graph is kept, so that D learns it."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), reals, create_graph=True)
    return 0.5 * gamma * grad.float().square().flatten(1).sum(1).mean()


def fool_rates(fake_logits: torch.Tensor) -> torch.Tensor:
    """Share of each step's reconstructions that D calls real (D(x') > 0.5): ``(S, B)`` -> ``(S,)``."""
    return (fake_logits > 0).float().mean(-1)


def real_accuracy(real_logits: torch.Tensor) -> torch.Tensor:
    """Share of real images that D calls real."""
    return (real_logits > 0).float().mean()


def fake_accuracies(fake_logits: torch.Tensor) -> torch.Tensor:
    """Share of each step's reconstructions that D tells apart (D(x') < 0.5): ``(S, B)`` -> ``(S,)``."""
    return (fake_logits < 0).float().mean(-1)
