"""KID and FID of each recursion step's reconstructions against the real test images (``evaluate kid_fid=default``):
torchmetrics' ``KernelInceptionDistance`` (its mean and standard deviation over random subsets) and
``FrechetInceptionDistance``, on the features of one Inception network shared by both.

The real images' features are computed once (``reset_real_features=False``); each step's reconstructions, quantized
to 8 bits as real images are, replace the previous step's. Which to trust at a test set's size, and why neither
replaces the two-sample test: docs/evaluation.md, "KID and FID".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchmetrics.image import FrechetInceptionDistance, KernelInceptionDistance

from recursive_ae_gan.core.errors import UserError, first_line
from recursive_ae_gan.core.keys import step_key
from recursive_ae_gan.models.realism import quantized_steps

# The weights torchmetrics' Inception (torch-fidelity's FID Inception) downloads on first use, into torch's hub cache.
INCEPTION_WEIGHTS = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)


@dataclass
class KidFid:
    """``kid_fid`` settings: which features (Inception's ``feature``-wide pool, or ``network``), and KID's subsets."""

    weights: str | None = None  # a local copy of INCEPTION_WEIGHTS; null: downloaded on first use
    feature: int = 2048  # Inception's feature layer: 64, 192, 768 or 2048 (what papers report)
    kid_subsets: int = 100
    kid_subset_size: int = 1000  # at most the number of test images
    batch_size: int = 64
    seed: int = 0  # KID's random subsets: the same for every step and every run
    network: nn.Module | None = None  # uint8 (B, 3, H, W) -> (B, F) features in place of Inception (the tests')

    def __post_init__(self) -> None:
        if self.feature not in (64, 192, 768, 2048):
            raise UserError(f"kid_fid.feature={self.feature}: one of Inception's feature layers 64, 192, 768, 2048")
        for key in ("kid_subsets", "kid_subset_size", "batch_size"):
            if not getattr(self, key) >= 1:
                raise UserError(f"kid_fid.{key}={getattr(self, key)}: at least 1")


def feature_network(settings: KidFid) -> nn.Module:
    """The network whose features KID and FID compare: ``settings.network``, else Inception (:func:`inception`)."""
    return settings.network if settings.network is not None else inception(settings)


def inception(settings: KidFid) -> nn.Module:
    """torchmetrics' Inception, its weights from ``settings.weights`` or downloaded: a failure is one line saying
    which file to fetch and where to give it."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        return NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(settings.feature)],
            feature_extractor_weights_path=settings.weights,
        )
    except ModuleNotFoundError as err:
        raise UserError(f"kid_fid needs {err.name or 'torch-fidelity'} (the Inception network): "
                        "pip install -e '.[fid]'") from None  # fmt: skip
    except OSError as err:  # no network (URLError), or no such local file
        if settings.weights is not None:
            raise UserError(f"kid_fid.weights={settings.weights} cannot be read ({first_line(err)})") from None
        raise UserError(
            f"the Inception weights for KID and FID cannot be downloaded ({first_line(err)}): fetch "
            f"{INCEPTION_WEIGHTS} and give its path as kid_fid.weights=PATH"
        ) from None


def kid_fid(
    model: nn.Module,
    images: torch.Tensor,
    depth: int,
    settings: KidFid,
    network: nn.Module,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """``test/step_i/{kid,kid_std,fid}`` for steps 0..depth of ``model`` on uint8 test ``images`` ``(N, C, H, W)``,
    on the features of ``network`` (:func:`feature_network`)."""
    if len(images) < 2:
        raise UserError(f"KID and FID need at least 2 test images, not {len(images)}: raise data.test_size")
    shape = (3, *images.shape[2:])  # grey images are repeated over Inception's 3 channels
    subset_size = min(settings.kid_subset_size, len(images))
    fid = FrechetInceptionDistance(feature=network, reset_real_features=False, input_img_size=shape).to(device)
    kid = KernelInceptionDistance(
        feature=network, subsets=settings.kid_subsets, subset_size=subset_size, reset_real_features=False
    ).to(device)

    def update(batches: torch.Tensor, real: bool) -> None:
        for batch in batches.split(settings.batch_size):
            batch = batch.to(device).expand(-1, 3, -1, -1)
            fid.update(batch, real=real)
            kid.update(batch, real=real)

    update(images, real=True)
    result = {}
    for step, reconstructions in enumerate(quantized_steps(model, images, depth)):
        update(reconstructions, real=False)
        with torch.random.fork_rng(devices=[]):  # torchmetrics draws the subsets from torch's global generator
            torch.manual_seed(settings.seed)
            mean, std = kid.compute()
        result |= {step_key("test", step, "kid"): float(mean), step_key("test", step, "kid_std"): float(std)}
        result[step_key("test", step, "fid")] = float(fid.compute())
        fid.reset()  # the reconstructions only: the real images' features stay
        kid.reset()
    return result
