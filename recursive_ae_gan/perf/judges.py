"""The realism panel's training throughput: ``python -m recursive_ae_gan.perf.judges``.

Trains each judge of the default panel (``conf/realism/default.yaml``) for a few epochs on synthetic CIFAR10-sized
images already in memory, in float32 and in bfloat16 autocast, and prints a markdown table: images per second of
this process's CPU time (on the CPU: blind to other processes' load; wall time on a GPU) and the seconds an epoch of
the recipe's 3,472 fit images takes. Docs: docs/benchmarks.md, "The realism test".
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from recursive_ae_gan.analysis.tables import markdown_table
from recursive_ae_gan.core.console import CONF_DIR
from recursive_ae_gan.models.autoencoder import build
from recursive_ae_gan.models.realism import Judge, RealismTest, shown_as_fake, train_judge

FIT_IMAGES = 3472  # the recipe's 4,085 training images less the 15% held out for validation


def throughput(spec: dict, test_cfg: RealismTest, images: int, epochs: int, device: torch.device) -> float:
    """Images per second of one judge's training (after one untimed epoch): process time on the CPU, else wall."""
    generator = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (images, 3, 32, 32), generator=generator, dtype=torch.uint8).to(device)
    fake = torch.randint(0, 256, (images, 3, 32, 32), generator=generator, dtype=torch.uint8).to(device)
    val = real[:64], fake[:64]
    judge = Judge(build(spec, [3, 32, 32]), device, test_cfg.bf16)
    fixed = replace(test_cfg, min_epochs=1, max_epochs=1)
    train_judge(judge, (real, fake), val, fixed)  # warm-up: allocations, oneDNN's kernel choice
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    train_judge(judge, (real, fake), val, replace(fixed, min_epochs=epochs, max_epochs=epochs))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return epochs * images / (clock() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per judge and precision")
    parser.add_argument("--images", type=int, default=FIT_IMAGES, help="synthetic training images")
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        test_cfg: RealismTest = instantiate(compose("evaluate", overrides=["ckpt_path=none"]).realism)
    shown_as_fake(1, 0)  # the draws' first call outside the timing
    rows = []
    for name, spec in test_cfg.judges.items():
        for bf16 in (False, True):
            rate = throughput(spec, replace(test_cfg, bf16=bf16), args.images, args.epochs, torch.device(args.device))
            rows.append([name, "bf16" if bf16 else "fp32", f"{rate:.0f}", f"{FIT_IMAGES / rate:.2f}"])
    print(markdown_table(["judge", "precision", "images/s", "s per epoch"], rows))


if __name__ == "__main__":
    main()
