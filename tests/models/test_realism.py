"""models.realism: judges trained to convergence (a faint pattern a 15-epoch judge misses), their validation images
held out of the training split, the panel at chance on identical images and sure of a blurred copy, the verdict and
its Holm correction against hand computations, the statistics against independent computations; no judge trains on
a test image."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binomtest, mannwhitneyu, norm

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.models import realism as realism_module
from recursive_ae_gan.models.realism import (
    RealismTest,
    Verdict,
    holm,
    judge_step,
    nearest_neighbour_step,
    panel_verdict,
    realism,
    shown_as_fake,
    split,
    verdict,
)
from recursive_ae_gan.run.config import check_realism

TINY = {
    "conv": {"_target_": "recursive_ae_gan.networks.ConvClassifier", "widths": [8, 16]},
    "patchgan": {"_target_": "recursive_ae_gan.networks.ConvDiscriminator", "widths": [8, 16]},
    "highpass": {"_target_": "recursive_ae_gan.networks.HighPassClassifier", "widths": [8, 16]},
}
# seed 2: each judge's 95% interval misses 0.5 on identical images for 1 seed in 20 by construction; of the panel's
# four, all hold 0.5 here (at seed 0 the high-pass judge scores 0.443 [0.393, 0.493]: chance, 2.2 SDs low)
QUICK = RealismTest(judges=TINY, min_epochs=5, max_epochs=30, patience=5, batch_size=32, lr=3e-3, seed=2)


def textures(n: int, seed: int, size: int = 12) -> torch.Tensor:
    """Random uint8 RGB textures ``(n, 3, size, size)``: all their detail is high frequency."""
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def box_blur(images: torch.Tensor) -> torch.Tensor:
    """A 3x3 box blur, as uint8 images again."""
    kernel = torch.full((3, 1, 3, 3), 1 / 9)
    blurred = F.conv2d(F.pad(images.float(), (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return blurred.round().clamp(0, 255).to(torch.uint8)


def faint_pattern(images: torch.Tensor, amplitude: float = 16.0) -> torch.Tensor:
    """``images`` with a fixed +-``amplitude`` pattern added or subtracted (a seeded sign per image): a linear judge
    cannot see it (its mean is zero), so a judge first sits at chance until it finds the pattern's energy."""
    n, c, h, w = images.shape
    pattern = torch.randint(0, 2, (c, h, w), generator=torch.Generator().manual_seed(9)) * 2 - 1
    sign = torch.randint(0, 2, (n, 1, 1, 1), generator=torch.Generator().manual_seed(n)) * 2 - 1
    return (images.float() + sign * pattern * amplitude).round().clamp(0, 255).to(torch.uint8)


def test_a_converged_judge_finds_a_faint_pattern_that_a_15_epoch_judge_misses() -> None:
    """The default stopping rule (at least 60 epochs, then a patience of 20) against a fixed 15 epochs."""
    train, test = textures(400, seed=1, size=8), textures(400, seed=2, size=8)
    defaults = RealismTest(judges={"conv": TINY["conv"]}, batch_size=32)
    assert (defaults.min_epochs, defaults.patience, defaults.max_epochs) == (60, 20, 300)
    pairs = (train, faint_pattern(train)), (test, faint_pattern(test))
    found, training = judge_step(TINY["conv"], *pairs, defaults)
    assert training.converged and training.epochs == training.best_epoch + 20 and training.best_epoch > 15
    assert found.low > 0.7 and found.p_value < 1e-20
    fixed = RealismTest(judges={"conv": TINY["conv"]}, batch_size=32, min_epochs=15, max_epochs=15)
    short, short_training = judge_step(TINY["conv"], *pairs, fixed)
    assert short.low <= 0.5 <= short.high and short_training.epochs == 15 and not short_training.converged


def test_the_panel_is_at_chance_on_identical_images_and_sure_of_a_blurred_copy() -> None:
    train, test = textures(384, seed=1), textures(384, seed=2)
    same = realism(Steps(lambda x: x), train, test, 0, QUICK)
    for name in (*TINY, "nn"):
        assert same[f"test/step_0/judge_{name}_acc_low"] <= 0.5 <= same[f"test/step_0/judge_{name}_acc_high"], name
    assert same["test/step_0/judge_p"] > 0.05
    blurred = realism(Steps(lambda x: box_blur(x.mul(255).round().to(torch.uint8)).float() / 255), train, test, 0,
                      QUICK)  # fmt: skip
    assert blurred["test/step_0/judge_acc"] > 0.9 and blurred["test/step_0/judge_p"] < 1e-6
    pair = (train, box_blur(train)), (test, box_blur(test))
    once = judge_step(TINY["conv"], *pair, QUICK)
    assert once == judge_step(TINY["conv"], *pair, QUICK)  # seeded: the same judge, the same verdict
    assert once[0].accuracy == blurred["test/step_0/judge_conv_acc"]


def test_the_verdict_is_the_strongest_judge_its_p_holm_corrected_over_the_panel() -> None:
    """Made-up results: Holm by hand. Sorted p: nn 0.005 (x4 = 0.02), conv 0.01 (x3 = 0.03), highpass 0.03
    (x2 = 0.06), patchgan 0.2 (x1 = 0.2); the strongest judge is conv (0.62), so the verdict's p is 0.03."""
    made_up = {
        "conv": Verdict(0.62, 0.59, 0.65, 0.66, 0.01, 1000),
        "patchgan": Verdict(0.51, 0.48, 0.54, 0.52, 0.2, 1000),
        "highpass": Verdict(0.60, 0.57, 0.63, 0.64, 0.03, 1000),
        "nn": Verdict(0.57, 0.54, 0.60, 0.58, 0.005, 1000),
    }
    assert holm([v.p_value for v in made_up.values()]) == pytest.approx([0.03, 0.2, 0.06, 0.02])
    name, found = panel_verdict(made_up)
    assert name == "conv" and found == Verdict(0.62, 0.59, 0.65, 0.66, pytest.approx(0.03), 1000)
    assert holm([0.02, 0.011, 0.03]) == pytest.approx([0.04, 0.033, 0.04])  # 0.03 x 1 never below 0.02 x 2
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([0.04]) == [0.04]  # one judge: nothing to correct


def test_the_validation_images_are_held_out_of_the_training_split_and_apart_from_the_test_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """By index: the fit and validation parts partition the training images, seeded; the judge fits on the one,
    picks its epoch on the other, and is scored on the test images only."""
    fit_index, val_index = split(100, 0.15, seed=0)
    assert len(val_index) == 15 and len(fit_index) == 85
    assert sorted([*fit_index.tolist(), *val_index.tolist()]) == list(range(100))  # disjoint, and all of them
    assert torch.equal(split(100, 0.15, seed=0)[1], val_index) and not torch.equal(split(100, 0.15, 1)[1], val_index)
    train, test = textures(40, seed=5, size=8), textures(20, seed=6, size=8)
    seen = {}
    trained = realism_module.train_judge

    def record(judge, fit, val, test_cfg):
        seen["fit"], seen["val"] = fit, val
        return trained(judge, fit, val, test_cfg)

    monkeypatch.setattr(realism_module, "train_judge", record)
    test_cfg = RealismTest(judges={"conv": TINY["conv"]}, min_epochs=1, max_epochs=2, patience=1, val_fraction=0.25)
    judge_step(TINY["conv"], (train, train.flip(-1)), (test, test.flip(-1)), test_cfg)
    fit_index, val_index = split(40, 0.25, seed=0)
    assert torch.equal(seen["fit"][0], train[fit_index]) and torch.equal(seen["fit"][1], train.flip(-1)[fit_index])
    assert torch.equal(seen["val"][0], train[val_index]) and torch.equal(seen["val"][1], train.flip(-1)[val_index])
    rows = lambda images: {row.numpy().tobytes() for row in images}  # noqa: E731
    assert not rows(seen["fit"][0]) & rows(seen["val"][0])
    assert not (rows(seen["fit"][0]) | rows(seen["val"][0])) & rows(torch.cat([test, test.flip(-1)]))


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(UserError, match=r"realism.min_epochs=50 is above realism.max_epochs=20"):
        RealismTest(judges=TINY, min_epochs=50, max_epochs=20)
    with pytest.raises(UserError, match="realism has no judge"):
        RealismTest(judges={}, nearest_neighbour=False)
    with pytest.warns(DeprecationWarning, match="realism.epochs=45 is deprecated"):
        fixed = RealismTest(judges=TINY, epochs=45)
    assert (fixed.min_epochs, fixed.max_epochs) == (45, 45)


def test_the_single_judge_s_old_override_still_composes_as_the_conv_judge_s_with_a_deprecation_warning(
    compose_cfg,
) -> None:
    """``realism/judge=X`` (before the panel: the judge is X) composes the real config and replaces the conv judge,
    as ``realism/judge@realism.judges.conv=X`` does, naming that spelling in its warning."""
    renamed = check_realism(compose_cfg("realism=default", "realism/judge@realism.judges.conv=highpass").realism)
    new_spelling = r"realism/judge=X is deprecated.*realism/judge@realism\.judges\.conv=X"
    with pytest.warns(DeprecationWarning, match=new_spelling):
        old = check_realism(compose_cfg("realism=default", "realism/judge=highpass").realism)
    assert old.judges == renamed.judges
    assert list(old.judges) == ["conv", "patchgan", "highpass"]
    assert old.judges["conv"]["_target_"] == "recursive_ae_gan.networks.HighPassClassifier"


def test_the_nearest_neighbour_test_against_a_hand_computation() -> None:
    """Four shown images on a line: each is called by its nearest other image; the p-value by permutation."""
    real = torch.tensor([0, 10, 100, 110], dtype=torch.uint8).view(4, 1, 1, 1)
    fake_version = real + 1  # each image's "reconstruction", one grey level off
    fake = shown_as_fake(4, seed=0)
    shown = torch.where(fake.view(-1, 1, 1, 1), fake_version, real).flatten().float()
    calls = []
    for i in range(4):
        others = [j for j in range(4) if j != i]
        nearest = min(others, key=lambda j: abs(shown[i] - shown[j]))
        calls.append(bool(fake[nearest]))
    accuracy = statistics.fmean(c == bool(f) for c, f in zip(calls, fake, strict=True))
    found = nearest_neighbour_step((real, fake_version), seed=0)
    assert found.accuracy == accuracy and found.n == 4 and 0 < found.p_value <= 1


def test_verdict_matches_scipy_and_a_hand_computation() -> None:
    logits = torch.tensor([2.0, 1.5, -0.5, 0.3, -1.0, -2.0, 0.7, -0.1, 1.2, -0.4])
    fake = torch.tensor([False, False, False, True, True, True, False, True, False, True])
    found = verdict(logits, fake)
    predicted_fake = logits <= 0
    correct = int((predicted_fake == fake).sum())  # 8 of 10: reals at -0.5, fakes at 0.3 are missed
    n, p = len(fake), correct / len(fake)
    assert found.accuracy == p == 0.8 and found.n == n
    z = norm.ppf(0.975)  # Wilson's interval, by its formula
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert (found.low, found.high) == pytest.approx((centre - half, centre + half))
    tail = sum(math.comb(n, k) for k in range(correct, n + 1)) / 2**n  # P(X >= correct) for X ~ Bin(n, 1/2)
    assert found.p_value == pytest.approx(tail)
    assert found.p_value == pytest.approx(binomtest(correct, n, 0.5, alternative="greater").pvalue)
    real_scores, fake_scores = logits[~fake].tolist(), logits[fake].tolist()
    u = mannwhitneyu(real_scores, fake_scores).statistic  # AUC = U / (n_real * n_fake)
    assert found.auc == pytest.approx(u / (len(real_scores) * len(fake_scores)))
    pairs = [r > f for r in real_scores for f in fake_scores]  # and as the share of ordered pairs
    assert found.auc == pytest.approx(statistics.fmean(pairs))


class Steps(torch.nn.Module):
    """An autoencoder whose every step is ``transform`` of its input, in [0, 1]."""

    def __init__(self, transform) -> None:
        super().__init__()
        self.transform = transform
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        return self.transform(x).expand(depth + 1, *x.shape)
