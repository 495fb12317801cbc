"""perf.judges: the panel's throughput measure runs each judge's real training loop and gives a rate."""

from __future__ import annotations

import torch

from recursive_ae_gan.models.realism import RealismTest
from recursive_ae_gan.perf.judges import throughput


def test_throughput_times_a_judge_s_training_in_images_per_second() -> None:
    spec = {"_target_": "recursive_ae_gan.networks.ConvClassifier", "widths": [4, 8]}
    for bf16 in (False, True):
        rate = throughput(
            spec, RealismTest(judges={"conv": spec}, batch_size=16, bf16=bf16), 64, 2, torch.device("cpu")
        )
        assert 0 < rate < float("inf")
