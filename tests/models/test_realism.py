"""models.realism: the classifier two-sample test at chance on identical images, sure of a blurred copy; its
statistics against independent computations; the judge never trains on a test image."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binomtest, mannwhitneyu, norm

from recursive_ae_gan.models.realism import EpochDraws, RealismTest, judge_step, realism, shown_as_fake, verdict

TINY_JUDGE = {"_target_": "recursive_ae_gan.networks.ConvClassifier", "widths": [8, 16]}
QUICK = RealismTest(judge=TINY_JUDGE, epochs=6, batch_size=32, lr=3e-3, seed=0)


def textures(n: int, seed: int, size: int = 12) -> torch.Tensor:
    """Random uint8 RGB textures ``(n, 3, size, size)``: all their detail is high frequency."""
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def box_blur(images: torch.Tensor) -> torch.Tensor:
    """A 3x3 box blur, as uint8 images again."""
    kernel = torch.full((3, 1, 3, 3), 1 / 9)
    blurred = F.conv2d(F.pad(images.float(), (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return blurred.round().clamp(0, 255).to(torch.uint8)


def test_the_judge_is_at_chance_on_identical_images_and_sure_of_a_blurred_copy() -> None:
    train, test = textures(384, seed=1), textures(192, seed=2)
    same = judge_step((train, train.clone()), (test, test.clone()), QUICK, progress=False)
    assert same.low <= 0.5 <= same.high and same.p_value > 0.05
    blurred = judge_step((train, box_blur(train)), (test, box_blur(test)), QUICK, progress=False)
    assert blurred.accuracy > 0.9 and blurred.p_value < 1e-6 and blurred.auc > 0.9
    again = judge_step((train, box_blur(train)), (test, box_blur(test)), QUICK, progress=False)
    assert again == blurred  # seeded: the same judge, the same verdict


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


def test_each_image_is_shown_once_per_epoch_as_itself_or_its_reconstruction() -> None:
    real, fake_version = textures(50, seed=3), textures(50, seed=4)
    draws = EpochDraws(real, fake_version, batch_size=16, seed=0)
    shown = []
    for epoch in range(3):
        examples = draws.epoch_examples(epoch)
        assert len(examples) == 50
        kinds = []
        for images, labels, indices in [examples[j] for j in range(len(examples))]:
            source = real if labels else fake_version
            assert torch.equal(images, source[indices])  # the training image itself, or its own reconstruction
            kinds.append(bool(labels))
        assert sorted(int(examples[j][2]) for j in range(50)) == list(range(50))  # each image once
        assert sum(kinds) == 25  # half of them real
        shown.append(kinds)
    assert shown[0] != shown[1]  # drawn anew each epoch
    assert shown_as_fake(50, 7).sum() == 25 and torch.equal(shown_as_fake(50, 7), shown_as_fake(50, 7))


def test_the_judge_trains_on_the_training_split_and_is_scored_on_the_test_split(monkeypatch) -> None:
    """``realism`` hands the judge the training images for training and the test images for scoring only."""
    train, test = textures(40, seed=5, size=8), textures(20, seed=6, size=8)
    seen = []

    def record(train_pair, test_pair, test_cfg, accelerator="cpu", progress=True):
        seen.append((train_pair, test_pair))
        return verdict(torch.zeros(len(test_pair[0])), shown_as_fake(len(test_pair[0]), 0))

    monkeypatch.setattr("recursive_ae_gan.models.realism.judge_step", record)

    class Twice(torch.nn.Module):
        """Steps 0..depth of an autoencoder that returns its input: every step is the image."""

        def __init__(self) -> None:
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor, depth: int) -> torch.Tensor:
            return x.expand(depth + 1, *x.shape)

    metrics = realism(Twice(), train, test, 1, QUICK, progress=False)
    assert set(metrics) == {
        f"test/step_{i}/judge_{m}" for i in (0, 1) for m in ("acc", "acc_low", "acc_high", "auc", "p")
    }
    for (train_real, train_fake), (test_real, test_fake) in seen:
        assert torch.equal(train_real, train) and torch.equal(train_fake, train)  # quantized steps of the train split
        assert torch.equal(test_real, test) and torch.equal(test_fake, test)
        train_rows = {row.numpy().tobytes() for row in torch.cat([train_real, train_fake])}
        assert not train_rows & {row.numpy().tobytes() for row in test_real}  # no test image in training
