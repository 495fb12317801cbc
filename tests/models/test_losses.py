"""The pure loss functions, game statistics and balance policies, against hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.models.balance import report_freezes_discriminator, target_weights
from recursive_ae_gan.models.losses import (
    GAME_LOSSES,
    discriminator_loss,
    fake_accuracies,
    fool_rates,
    generator_losses,
    r1_penalty,
    real_accuracy,
    reconstruction_losses,
)
from recursive_ae_gan.run.config import check

# Two judged steps of four fakes each; a logit of exactly 0 is D(x') = 0.5, which is not "real".
FAKE_LOGITS = torch.tensor([[2.0, -1.0, 0.0, 3.0], [-2.0, -0.5, -4.0, 1.0]])


@pytest.fixture
def logits_and_target() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(3, 2, 1, 5, 5, generator=generator)  # (S, B, C, H, W)
    target = torch.rand(2, 1, 5, 5, generator=generator)
    return logits, target


def test_bce_equals_torch_bce_on_sigmoid_outputs(logits_and_target: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = logits_and_target
    expected = torch.stack([F.binary_cross_entropy(torch.sigmoid(step), target) for step in logits])
    torch.testing.assert_close(reconstruction_losses(logits, target, "bce"), expected)


def test_mse_compares_sigmoid_images(logits_and_target: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = logits_and_target
    expected = torch.stack([F.mse_loss(torch.sigmoid(step), target) for step in logits])
    torch.testing.assert_close(reconstruction_losses(logits, target, "mse"), expected)


def test_discriminator_loss_is_bce_real_one_fake_zero() -> None:
    real = torch.tensor([1.5, -0.5, 2.0, 0.3])
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(FAKE_LOGITS)
    expected = 0.5 * (-torch.log(d_real).mean() - torch.log(1 - d_fake).mean())
    torch.testing.assert_close(discriminator_loss(real, FAKE_LOGITS), expected)


def test_generator_losses_per_step() -> None:
    d_fake = torch.sigmoid(FAKE_LOGITS)
    torch.testing.assert_close(generator_losses(FAKE_LOGITS, "minimax"), torch.log(1 - d_fake).mean(1))
    torch.testing.assert_close(generator_losses(FAKE_LOGITS, "non_saturating"), -torch.log(d_fake).mean(1))


def test_hinge_losses_by_hand() -> None:
    real = torch.tensor([1.5, -0.5, 2.0, 0.3])  # hinge: 0, 1.5, 0, 0.7
    fake_hinge = torch.tensor([[3.0, 0.0, 1.0, 4.0], [0.0, 0.5, 0.0, 2.0]])  # relu(1 + fake logits), per step
    expected = 0.5 * (torch.tensor([0.0, 1.5, 0.0, 0.7]).mean() + fake_hinge.mean())
    torch.testing.assert_close(GAME_LOSSES["hinge"].discriminator(real, FAKE_LOGITS), expected)
    torch.testing.assert_close(generator_losses(FAKE_LOGITS, "hinge"), torch.tensor([-1.0, 5.5 / 4]))
    assert GAME_LOSSES["minimax"].discriminator is GAME_LOSSES["non_saturating"].discriminator is discriminator_loss


def test_r1_penalty_is_half_gamma_times_the_squared_gradient_norm_of_d_at_real_images() -> None:
    """A linear D, logit = w . x + b, has the gradient w at every image: R1 = gamma / 2 * |w|^2, whatever x."""
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1))
    with torch.no_grad():
        d[1].weight.copy_(torch.arange(12.0).view(1, 12) / 10)
    reals = torch.rand(5, 3, 2, 2, generator=torch.Generator().manual_seed(0)).requires_grad_()
    penalty = r1_penalty(d(reals).squeeze(1), reals, gamma=4.0)
    expected = 0.5 * 4.0 * (torch.arange(12.0) / 10).square().sum()
    torch.testing.assert_close(penalty, expected)
    penalty.backward()  # D learns it: d(R1)/dw = gamma * w
    torch.testing.assert_close(d[1].weight.grad, 4.0 * d[1].weight.detach())

    # A D whose gradient varies: tanh(w . x), gradient (1 - tanh^2) w per image, by hand.
    logits = torch.tanh(d(reals).squeeze(1))
    slope = 1 - logits.detach() ** 2
    by_hand = 0.5 * 2.0 * (slope**2 * (torch.arange(12.0) / 10).square().sum()).mean()
    torch.testing.assert_close(r1_penalty(logits, reals, gamma=2.0), by_hand)


def test_fool_rate_and_accuracy_by_hand() -> None:
    # Step 0: 2.0 and 3.0 fool D (0.0 does not); step 1: only 1.0 does.
    torch.testing.assert_close(fool_rates(FAKE_LOGITS), torch.tensor([0.5, 0.25]))
    assert real_accuracy(torch.tensor([1.0, -1.0, 0.0, 0.1, 5.0])).item() == pytest.approx(3 / 5)


@pytest.mark.parametrize(
    ("fake_logits", "frozen"),
    [
        (torch.tensor([-1.0, -2.0, -3.0, 1.0]), True),  # accuracy 0.75
        (torch.tensor([-1.0, -2.0, 3.0, 1.0]), False),  # exactly 0.5: not more than half
        (torch.tensor([[-1.0, 2.0], [-3.0, 0.0]]), False),  # 0 is not told apart: 2 of 4 correct
        (torch.tensor([[-1.0, -2.0], [-3.0, 0.0]]), True),  # 3 of 4 correct over all steps
        (torch.tensor([1.0, 2.0, 3.0, 4.0]), False),
    ],
)
def test_report_freezes_d_only_above_half_fake_accuracy(fake_logits: torch.Tensor, frozen: bool) -> None:
    result = report_freezes_discriminator(fake_accuracies(fake_logits))  # the rule takes each step's accuracy
    assert type(result) is bool and result is frozen


def test_target_weights_steer_toward_half_and_stay_bounded() -> None:
    weights = torch.tensor([0.05, 0.05, 0.05])
    rates = torch.tensor([0.0, 0.5, 1.0])
    updated = target_weights(weights, rates, gain=0.01, low=0.0, high=0.1)
    torch.testing.assert_close(updated, torch.tensor([0.055, 0.05, 0.045]))
    assert torch.equal(weights, torch.tensor([0.05, 0.05, 0.05]))  # the input is not modified
    # Far from 50% with a large gain: clamped to the bounds.
    clamped = target_weights(torch.tensor([0.09, 0.01]), torch.tensor([0.0, 1.0]), gain=1.0, low=0.005, high=0.1)
    torch.testing.assert_close(clamped, torch.tensor([0.1, 0.005]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.adv_loss=wasserstein", "model.adv_loss='wasserstein': expected one of minimax, non_saturating, hinge"),
        ("model.balance=foo", "model.balance='foo': expected one of alternate, report, target"),
        ("model.depth_schedule=random", "model.depth_schedule='random': expected one of sum, cycle"),
    ],
)
def test_bad_choices_name_the_override(compose_cfg, override: str, message: str) -> None:
    """The choices are the module's Literal types, checked with the config before anything is built."""
    check(compose_cfg("model=rae_gan", "model.balance=report", "model.adv_loss=non_saturating"))  # valid ones pass
    with pytest.raises(UserError) as err:
        check(compose_cfg("model=rae_gan", override))
    assert str(err.value) == message
