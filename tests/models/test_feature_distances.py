"""KID and FID per recursion step (``models.feature_distances``), on a small feature network in place of Inception,
against an independent computation on the same features (numpy and scipy); Inception's weights, offline, in one
line."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PixelProjection, data_and_model
from scipy import linalg

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.models.feature_distances import INCEPTION_WEIGHTS, KidFid, inception, kid_fid

DEPTH = 1


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance of two Gaussians fitted to the features (unbiased covariances)."""
    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    return float(((mu_r - mu_f) ** 2).sum() + np.trace(cov_r + cov_f - 2 * linalg.sqrtm(cov_r @ cov_f).real))


def mmd(real: np.ndarray, fake: np.ndarray) -> float:
    """The unbiased squared MMD with KID's kernel (x.y / d + 1)^3."""
    d, m = real.shape[1], len(real)
    k_rr, k_ff, k_rf = ((a @ b.T / d + 1) ** 3 for a, b in ((real, real), (fake, fake), (real, fake)))
    within = (k_rr.sum() - np.trace(k_rr) + k_ff.sum() - np.trace(k_ff)) / (m * (m - 1))
    return float(within - 2 * k_rf.mean())


# An untrained autoencoder's reconstructions barely vary: their features' covariance is near singular, which scipy's
# sqrtm says, and computes all the same (to the 1e-4 asked here).
@pytest.mark.filterwarnings("ignore:Matrix is singular:scipy.linalg.LinAlgWarning")
def test_kid_and_fid_of_each_step_match_an_independent_computation(compose_cfg) -> None:
    datamodule, model = data_and_model(compose_cfg("model=rae", f"model.recursion_depth={DEPTH}"))
    images = datamodule.images("test")  # uint8 (32, 1, 28, 28)
    network, settings = PixelProjection(), KidFid(kid_subsets=5, kid_subset_size=20, batch_size=10)
    result = kid_fid(model, images, DEPTH, settings, network)

    model.eval()
    with torch.no_grad():
        steps = model(images.float() / 255, DEPTH).mul(255).round().clamp(0, 255).to(torch.uint8)
        features = lambda x: network(x.expand(-1, 3, -1, -1)).double().numpy()  # noqa: E731
        real = features(images)
        for step in range(DEPTH + 1):
            fake = features(steps[step])
            assert result[f"test/step_{step}/fid"] == pytest.approx(fid(real, fake), rel=1e-4, abs=1e-6)
            torch.manual_seed(settings.seed)  # KID's subsets, from torch's generator: real then fake, per subset
            scores = [mmd(real[torch.randperm(32)[:20]], fake[torch.randperm(32)[:20]]) for _ in range(5)]
            assert result[f"test/step_{step}/kid"] == pytest.approx(np.mean(scores), rel=1e-4, abs=1e-7)
            assert result[f"test/step_{step}/kid_std"] == pytest.approx(np.std(scores), rel=1e-4, abs=1e-7)
    assert sorted(result) == sorted(f"test/step_{s}/{m}" for s in range(DEPTH + 1) for m in ("fid", "kid", "kid_std"))
    assert result["test/step_0/fid"] > 0 and result["test/step_0/fid"] != result["test/step_1/fid"]


def test_inception_offline_is_one_line_naming_the_file_and_the_option(monkeypatch, tmp_path: Path) -> None:
    fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")

    def no_network(url: str, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fidelity, "load_state_dict_from_url", no_network)  # the machine without network
    with pytest.raises(UserError) as offline:
        inception(KidFid())
    assert str(offline.value) == (
        "the Inception weights for KID and FID cannot be downloaded (<urlopen error [Errno -3] Temporary failure in "
        f"name resolution>): fetch {INCEPTION_WEIGHTS} and give its path as kid_fid.weights=PATH"
    )
    missing = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(UserError, match=rf"^kid_fid.weights={missing} cannot be read \("):
        inception(KidFid(weights=str(missing)))


def test_bad_settings_are_one_line() -> None:
    with pytest.raises(UserError, match=r"^kid_fid.feature=100: one of Inception's feature layers 64, 192, 768, 2048$"):
        KidFid(feature=100)
    with pytest.raises(UserError, match=r"^kid_fid.kid_subset_size=0: at least 1$"):
        KidFid(kid_subset_size=0)
