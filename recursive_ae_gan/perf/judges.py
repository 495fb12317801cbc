"""The realism panel's training throughput: ``python -m recursive_ae_gan.perf.judges``.

Times each judge of the default panel (``conf/realism/default.yaml``) training in today's loop (``train_judge``), in
float32 and in bfloat16 autocast, and beside them the loop it replaced, as the baseline: the conv judge in a
Lightning ``Trainer`` with batches of 64 in float32 (a3e157c). The measures run interleaved, ``--rounds`` times
over, so that the host's load falls alike on each; a round's rate is images per second of this process's CPU time
(blind to other processes' load; wall time on a GPU), on synthetic CIFAR10-sized images already in memory, 3,472 fit
and 613 validation images as on the recipe. Prints a markdown table (the median round, the slowest and the fastest,
the median against the baseline's, the seconds an epoch takes) and the panel's seconds per judged step at the epochs
its judges ran on the recipe. Docs: docs/benchmarks.md, "The realism test".
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from recursive_ae_gan.analysis.tables import markdown_table
from recursive_ae_gan.core.console import CONF_DIR, quiet
from recursive_ae_gan.models.autoencoder import NetSpec, adam, build
from recursive_ae_gan.models.realism import Judge, RealismTest, pick, shown_as_fake, train_judge

FIT_IMAGES = 3472  # the recipe's 4,085 training images less the 15% held out for validation
VAL_IMAGES = 613
# The epochs each trained judge ran on the recipe's step 0 (docs/results.md, "The converged panel on the recipe").
RECIPE_EPOCHS = {"conv": 114, "patchgan": 60, "highpass": 60}
BASELINE_EPOCHS, BASELINE_IMAGES = 15, 4085  # the judge before issue 31: 15 epochs of every training image
SHAPE = (3, 32, 32)


def synthetic(images: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, reconstructed) uint8 images ``(images, 3, 32, 32)``, seeded noise: the loop's cost does not depend on
    what the images show."""
    generator = torch.Generator().manual_seed(0)
    pair = [torch.randint(0, 256, (images, *SHAPE), generator=generator, dtype=torch.uint8) for _ in range(2)]
    return pair[0].to(device), pair[1].to(device)


def clock(device: torch.device) -> Callable[[], float]:
    """Process time on the CPU; on a GPU, wall time once the queued work is done."""
    if device.type == "cpu":
        return time.process_time

    def wall() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return wall


def throughput(spec: NetSpec, test_cfg: RealismTest, images: int, epochs: int, device: torch.device,
               val_images: int = VAL_IMAGES) -> float:  # fmt: skip
    """Images per second of one judge's training in ``train_judge`` (its validation pass included), after one
    untimed epoch (allocations, oneDNN's kernel choice)."""
    real, fake = synthetic(images + val_images, device)
    fit, val = (real[:images], fake[:images]), (real[images:], fake[images:])
    judge = Judge(build(spec, list(SHAPE)), device, test_cfg.bf16)
    fixed = replace(test_cfg, min_epochs=1, max_epochs=1)
    train_judge(judge, fit, val, fixed)
    now = clock(device)
    start = now()
    train_judge(judge, fit, val, replace(fixed, min_epochs=epochs, max_epochs=epochs))
    return epochs * images / (now() - start)


class LightningJudge(L.LightningModule):
    """The baseline: the judge's loop before issue 31 (a3e157c), a Lightning module fed by a data loader made anew
    each epoch (each image as itself or as its reconstruction, drawn per epoch), float32, BCE and Adam."""

    def __init__(self, spec: NetSpec, images: tuple[torch.Tensor, torch.Tensor], batch_size: int, lr: float) -> None:
        super().__init__()
        self.judge = build(spec, list(SHAPE))
        self.images, self.batch_size, self.lr = images, batch_size, lr

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        images, real, _ = batch
        loss = nn.functional.binary_cross_entropy_with_logits(self.judge(images.float().div(255)), real.float())
        self.log("judge_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.judge.parameters(), self.lr, (0.9, 0.999))

    def train_dataloader(self) -> DataLoader:
        n, epoch = len(self.images[0]), self.trainer.current_epoch
        fake = shown_as_fake(n, epoch + 1)
        examples = TensorDataset(pick(*self.images, fake), ~fake, torch.arange(n))
        generator = torch.Generator().manual_seed(epoch)
        return DataLoader(examples, batch_size=self.batch_size, shuffle=True, generator=generator)


def lightning_throughput(spec: NetSpec, images: int, epochs: int, device: torch.device, batch_size: int = 64,
                         lr: float = 1e-3) -> float:  # fmt: skip
    """Images per second of the baseline's training: a fit of ``1 + epochs`` epochs less a fit of 1, so that the
    Trainer's setup and the first epoch's warm-up cancel."""
    pair = synthetic(images, torch.device("cpu"))  # the old loop's images lived on the host, its loader moved them
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    now = clock(device)
    seconds = []
    for fit_epochs in (1, 1 + epochs):
        torch.manual_seed(0)
        module = LightningJudge(spec, pair, batch_size, lr)
        trainer = L.Trainer(
            max_epochs=fit_epochs, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
            enable_model_summary=False, enable_progress_bar=False, reload_dataloaders_every_n_epochs=1,
            num_sanity_val_steps=0,
        )  # fmt: skip
        start = now()
        trainer.fit(module)
        seconds.append(now() - start)
    return epochs * images / (seconds[1] - seconds[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per judge, precision and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every measure")
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner per Trainer
    device = torch.device(args.device)
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        test_cfg: RealismTest = instantiate(compose("evaluate", overrides=["ckpt_path=none"]).realism)
    shown_as_fake(1, 0)  # the draws' first call outside the timing
    baseline = ("conv", "Lightning, batch 64 (a3e157c)", "fp32")
    measures: dict[tuple[str, str, str], Callable[[], float]] = {
        baseline: partial(lightning_throughput, test_cfg.judges["conv"], FIT_IMAGES, args.epochs, device),
    }
    loop = f"plain, batch {test_cfg.batch_size}"
    for name, spec in test_cfg.judges.items():
        for bf16 in (False, True):
            measures[name, loop, "bf16" if bf16 else "fp32"] = partial(
                throughput, spec, replace(test_cfg, bf16=bf16), FIT_IMAGES, args.epochs, device
            )
    rates: dict[tuple[str, str, str], list[float]] = {key: [] for key in measures}
    for _ in range(args.rounds):
        for key, measure in measures.items():
            rates[key].append(measure())
    median = {key: statistics.median(found) for key, found in rates.items()}
    rows = []
    for key, found in rates.items():
        against = f"{median[key] / median[baseline]:.2f}" if key[0] == baseline[0] else ""  # the same judge only
        rows.append([*key, f"{median[key]:,.0f}", f"{min(found):,.0f}-{max(found):,.0f}", against,
                     f"{FIT_IMAGES / median[key]:.2f}"])  # fmt: skip
    header = ["judge", "loop", "precision", "images/s", "rounds' range", "x the baseline", "s per epoch"]
    print(markdown_table(header, rows))
    precision = "bf16" if test_cfg.bf16 else "fp32"
    judged = {name: epochs for name, epochs in RECIPE_EPOCHS.items() if name in test_cfg.judges}
    panel = sum(epochs * FIT_IMAGES / median[name, loop, precision] for name, epochs in judged.items())
    before = BASELINE_EPOCHS * BASELINE_IMAGES / median[baseline]
    epochs = ", ".join(f"{name} {epochs}" for name, epochs in judged.items())
    print(
        f"\nthe panel's training per judged step at the recipe's epochs ({epochs}; {precision}): {panel:.0f} s; "
        f"the baseline judge's {BASELINE_EPOCHS} epochs of {BASELINE_IMAGES:,} images: {before:.0f} s"
    )


if __name__ == "__main__":
    main()
