"""perf.judges: the panel's throughput measure runs each judge's real training loop, and the baseline's (the
Lightning loop it replaced), and gives a rate."""

from __future__ import annotations

import logging

import torch

from recursive_ae_gan.models.realism import RealismTest
from recursive_ae_gan.perf.judges import lightning_throughput, throughput

SPEC = {"_target_": "recursive_ae_gan.networks.ConvClassifier", "widths": [4, 8]}


def test_throughput_times_a_judge_s_training_in_images_per_second() -> None:
    for bf16 in (False, True):
        rate = throughput(
            SPEC, RealismTest(judges={"conv": SPEC}, batch_size=16, bf16=bf16), 64, 2, torch.device("cpu"), 16
        )
        assert 0 < rate < float("inf")


def test_the_baseline_times_the_lightning_loop_in_images_per_second(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="lightning.pytorch")
    rate = lightning_throughput(SPEC, 256, 2, torch.device("cpu"), batch_size=16)  # 32 steps: more than setup noise
    assert 0 < rate < float("inf")
