"""Training throughput of the framework against plain PyTorch: ``python -m recursive_ae_gan.bench``.

For every dataset's network, model (ae, rae, ae_gan, rae_gan) and batch size, two runs train on
the same synthetic uint8 images of the dataset's shape:

* framework: the LightningModule of the composed ``conf/train.yaml`` (``data=.. model=..``), built
  as training builds it (``instantiate(cfg.model, image_shape=...)`` from the data's image shape) and
  fitted by a real ``lightning.Trainer`` (no logger, checkpoints, progress bar or validation) over
  the real ``ImageDataModule`` loaders;
* plain: the same networks (``report_autoencoder(shape)``, ``MLPDiscriminator(shape, hidden)``),
  losses, fused Adam, recursion and D/AE alternation in a bare loop.

After ``warmup_steps`` batches, ``windows`` windows of ``window_images`` images each are timed
(with a device sync at each boundary); a row's throughput is the windows' median. Rows are printed
with the framework/plain ratio and peak memory, written to ``<out_dir>/<time>.csv``, and the last
line is ``min ratio: X``. Results and the GPU fast path: docs/benchmarks.md.
"""

from __future__ import annotations

import csv
import gc
import logging
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import count, pairwise
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra import compose
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from recursive_ae_gan import cli
from recursive_ae_gan.data import ImageDataModule, epoch_permutation
from recursive_ae_gan.errors import UserError
from recursive_ae_gan.losses import (
    discriminator_loss,
    fool_rates,
    generator_losses,
    reconstruction_losses,
    target_weights,
)
from recursive_ae_gan.networks import MLPDiscriminator, report_autoencoder

# The benchmarked datasets (conf/data/<name>.yaml) and their image shapes (C, H, W), which size the networks.
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
MODELS = ("ae", "rae", "ae_gan", "rae_gan")
PRECISIONS = ("32-true", "bf16-mixed")
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}

# What a null setting means on each device: the GPU rows are the fast path (docs/benchmarks.md).
DEVICE_DEFAULTS = {
    "cuda": {
        "batch_sizes": [64, 256, 1024],
        "warmup_steps": 30,
        "window_images": 32768,
        "precision": "bf16-mixed",
        "compile": True,
        "channels_last": True,
    },
    "cpu": {
        "batch_sizes": [64, 256],
        "warmup_steps": 3,
        "window_images": 1024,
        "precision": "32-true",
        "compile": False,
        "channels_last": False,
    },
}
# bench.quick=true: a smoke run of every row in seconds, for the test suite.
QUICK = {"batch_sizes": [8], "num_images": 32, "warmup_steps": 1, "windows": 2, "window_images": 8, "repeats": 1}


@dataclass(frozen=True)
class Settings:
    """``conf/bench.yaml``'s ``bench`` node with the device defaults and ``quick`` applied."""

    datasets: list[str]
    models: list[str]
    depth: int
    batch_sizes: list[int]
    num_images: int
    warmup_steps: int
    windows: int
    repeats: int
    window_images: int
    device: torch.device
    precision: str
    compile: bool
    channels_last: bool
    threads: int | None
    clock: str
    seed: int
    out_dir: Path


def settings(bench: DictConfig) -> Settings:
    """Fill in the nulls for the device, apply ``quick``, and reject what cannot be measured."""
    values = OmegaConf.to_container(bench, resolve=True)
    device = values["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in DEVICE_DEFAULTS:
        raise UserError(f"bench.device={device!r} is not one of: cuda, cpu, null")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("bench.device=cuda but torch sees no GPU; leave bench.device=null to use the CPU")
    values |= {k: v for k, v in DEVICE_DEFAULTS[device].items() if values[k] is None}
    if values.pop("quick"):
        values |= QUICK
    for name, choices in [("datasets", SHAPES), ("models", MODELS)]:
        if not values[name] or not set(values[name]) <= set(choices):
            raise UserError(f"bench.{name}={values[name]} must list some of: {', '.join(choices)}")
    if values["clock"] not in CLOCKS:
        raise UserError(f"bench.clock={values['clock']!r} is not one of: {', '.join(CLOCKS)}")
    if values["clock"] == "process" and device == "cuda":
        raise UserError("bench.clock=process counts CPU time, not the GPU's work: use bench.clock=wall on cuda")
    if values["precision"] not in PRECISIONS:
        raise UserError(f"bench.precision={values['precision']!r} is not one of: {', '.join(PRECISIONS)}")
    for name in ("depth", "num_images", "warmup_steps", "windows", "repeats", "window_images", "threads"):
        if values[name] is not None and values[name] < 1:
            raise UserError(f"bench.{name} must be at least 1, got {values[name]}")
    if not values["batch_sizes"] or min(values["batch_sizes"]) < 1:
        raise UserError(f"bench.batch_sizes={values['batch_sizes']} must list sizes of at least 1")
    if any(values["num_images"] % size for size in values["batch_sizes"]):
        raise UserError(  # a short last batch would be timed as a full one
            f"bench.num_images={values['num_images']} must be a multiple of every batch size {values['batch_sizes']}"
        )
    return Settings(**values | {"device": torch.device(device), "out_dir": Path(values["out_dir"])})


def synthetic_images(shape: Sequence[int], n: int, seed: int) -> torch.Tensor:
    """``n`` random uint8 images of ``shape`` ``(C, H, W)``: ``(n, C, H, W)``; the speed needs no real data."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=generator)


class SyntheticImageDataModule(ImageDataModule):
    """``ImageDataModule`` (its loaders, on-device path and uint8 -> float step) over synthetic images of
    the dataset's ``image_shape`` (C, H, W)."""

    def __init__(self, num_images: int, image_shape: Sequence[int], **kwargs) -> None:
        super().__init__(**kwargs)  # its save_hyperparameters() keeps num_images and image_shape in hparams too

    def prepare_data(self) -> None:
        """Nothing to download."""

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            hp = self.hparams
            images = synthetic_images(hp.image_shape, hp.num_images, hp.seed)
            # The training images; "val" only gives the image shape to the model (validation is off).
            self.splits = {"train": images, "val": images[:1]}


@dataclass
class Windows:
    """Timestamps every ``steps`` batches after ``warmup`` batches, ``number`` windows in all."""

    warmup: int
    number: int
    steps: int
    sync: Callable[[], None]
    clock: Callable[[], float] = time.perf_counter
    batches: int = 0
    stamps: list[float] = field(default_factory=list)

    def tick(self) -> bool:
        """Count one finished batch; True once the last window has ended."""
        self.batches += 1
        timed = self.batches - self.warmup
        if timed >= 0 and timed % self.steps == 0:
            self.sync()  # the GPU runs ahead of Python: time what it finished, not what was queued
            self.stamps.append(self.clock())
        return timed == self.number * self.steps

    def images_per_second(self, batch_size: int) -> float:
        return statistics.median(batch_size * self.steps / (end - start) for start, end in pairwise(self.stamps))


class WindowTimer(L.Callback):
    """Feeds every finished training batch to ``Windows`` and stops the fit after the last window."""

    def __init__(self, windows: Windows) -> None:
        self.windows = windows

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if self.windows.tick():
            trainer.should_stop = True


@dataclass(frozen=True)
class Row:
    """One line of the table; img/s is a run's median window, the best of ``repeats`` runs."""

    dataset: str
    model: str
    depth: int
    batch: int
    framework_img_s: float
    plain_img_s: float
    ratio: float
    framework_peak_mib: float
    plain_peak_mib: float


def train_config(s: Settings, dataset: str, model: str, batch_size: int) -> DictConfig:
    """``conf/train.yaml`` composed for one row (Hydra must be initialised on ``conf/``)."""
    depth = s.depth if model.startswith("rae") else 0
    overrides = [
        f"data={dataset}",
        f"model={model}",
        f"model.recursion_depth={depth}",
        f"model.compile={s.compile}",
        f"model.channels_last={s.channels_last}",
        f"data._target_={SyntheticImageDataModule.__module__}.{SyntheticImageDataModule.__qualname__}",
        f"+data.num_images={s.num_images}",
        f"+data.image_shape=[{','.join(map(str, SHAPES[dataset]))}]",
        f"data.batch_size={batch_size}",
        f"seed={s.seed}",
        f"paths.output_dir={s.out_dir}",
        f"trainer.accelerator={'gpu' if s.device.type == 'cuda' else 'cpu'}",
        f"trainer.precision={s.precision}",
        "trainer.max_epochs=-1",  # WindowTimer stops the fit
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_checkpointing=false",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    if model.endswith("gan"):
        overrides.append("model.warmup_epochs=0")  # time the game, not the reconstruction-only warm-up
    return compose(config_name="train", overrides=overrides)


def framework_run(cfg: DictConfig, windows: Windows) -> dict[str, torch.Tensor]:
    """Fit the composed LightningModule with a real Trainer until ``windows`` is done; its final state."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    torch.manual_seed(cfg.seed)  # as train(): the weights are seeded right before the model is built
    model = instantiate(cfg.model, image_shape=list(datamodule.image_shape))
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[WindowTimer(windows)])
    trainer.fit(model, datamodule=datamodule)
    return model.state_dict()


def recurse(net: torch.nn.Module, x: torch.Tensor, depth: int) -> torch.Tensor:
    """Logits of steps 0..depth, each step fed the previous one's image: ``(depth + 1, B, C, H, W)``."""
    steps = []
    for _ in range(depth + 1):
        logits = net(x)
        steps.append(logits)
        x = torch.sigmoid(logits)
    return torch.stack(steps)


def plain_run(cfg: DictConfig, windows: Windows) -> dict[str, torch.Tensor]:
    """The same training in a bare loop, what a skilled engineer writes without a framework; its final state.

    Same networks, initial weights, batches (order included), losses, fused Adam, recursion and
    D/AE alternation as ``framework_run`` (balance policy ``target``, the config's default), so
    the returned state matches the LightningModule's ``state_dict()``.
    """
    m, data = cfg.model, cfg.data
    adversarial = "discriminator" in m
    if get_object(m.net._target_) is not report_autoencoder or (
        adversarial and get_object(m.discriminator._target_) is not MLPDiscriminator
    ):
        raise UserError("the plain loop builds the report's networks: model/net=report, model/discriminator=mlp")
    shape = tuple(data.image_shape)
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    torch.manual_seed(cfg.seed)
    net = report_autoencoder(shape).to(device)
    if m.channels_last:
        net.to(memory_format=torch.channels_last)
    loss_name = m.loss or net.default_loss
    opt_ae = torch.optim.Adam(net.parameters(), lr=m.lr, betas=tuple(m.betas), fused=True)
    modules = {"net": net}
    if adversarial:
        disc = modules["discriminator"] = MLPDiscriminator(shape, m.discriminator.hidden).to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=m.d_lr, betas=tuple(m.d_betas), fused=True)
        adv_weights = torch.full((m.recursion_depth + 1,), float(m.adv_weight), device=device)
        low, high = m.adv_weight_bounds
    if m.compile:
        for module in modules.values():
            module.compile()
    bf16 = cfg.trainer.precision == "bf16-mixed"
    autocast = torch.autocast(device.type, torch.bfloat16) if bf16 else nullcontext()
    images = synthetic_images(shape, data.num_images, data.seed).to(device)

    def step(x: torch.Tensor) -> None:
        nonlocal adv_weights
        logits = recurse(net, x, m.recursion_depth)  # (S, B, C, H, W)
        loss = reconstruction_losses(logits, x, loss_name).sum()
        if adversarial:
            fakes = torch.sigmoid(logits)
            steps, batch = fakes.shape[:2]
            d_logits = disc(torch.cat([x, fakes.detach().flatten(0, 1)]))  # real and every step's fakes, one call
            fake_logits = d_logits[batch:].view(steps, batch)
            rates = fool_rates(fake_logits.detach())
            opt_d.zero_grad(set_to_none=True)
            discriminator_loss(d_logits[:batch], fake_logits).backward()
            opt_d.step()
            disc.requires_grad_(False)  # the autoencoder's step needs no gradients for D's weights
            g_per_step = generator_losses(disc(fakes.flatten(0, 1)).view(steps, batch), m.adv_loss)
            loss = loss + (adv_weights * g_per_step).mean()
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        if adversarial:
            disc.requires_grad_(True)
            adv_weights = target_weights(adv_weights, rates, m.target_gain, low, high)

    for epoch in count():
        order = epoch_permutation(len(images), data.seed, epoch).to(device)  # the datamodule's order
        for indices in order.split(data.batch_size):
            x = images[indices].float().div_(255)
            if m.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                step(x)
            if windows.tick():
                state = {f"{name}.{k}": v for name, module in modules.items() for k, v in module.state_dict().items()}
                return state | ({"adv_weights": adv_weights} if adversarial else {})


def measure(s: Settings, run: Callable[[Windows], object], batch_size: int) -> tuple[float, float]:
    """Images per second (median window) and peak memory in MiB of one run."""
    cuda = s.device.type == "cuda"
    if cuda:
        gc.collect()  # the previous run's Trainer and modules sit in reference cycles, holding GPU memory
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(s.device)
    sync = torch.cuda.synchronize if cuda else lambda: None
    windows = Windows(s.warmup_steps, s.windows, max(1, s.window_images // batch_size), sync, CLOCKS[s.clock])
    run(windows)
    if cuda:
        peak = torch.cuda.max_memory_allocated(s.device) / 2**20
    else:  # the process's peak so far (Linux reports KiB): it cannot be reset per run
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return windows.images_per_second(batch_size), peak


def measure_row(s: Settings, dataset: str, model: str, cfg: DictConfig) -> Row:
    """Framework and plain runs in turn, ``repeats`` each; each path keeps its best throughput."""
    batch_size = cfg.data.batch_size
    framework, plain = [], []  # (img/s, peak MiB) per run
    for _ in range(s.repeats):
        framework.append(measure(s, lambda w: framework_run(cfg, w), batch_size))
        plain.append(measure(s, lambda w: plain_run(cfg, w), batch_size))
    (fw, fw_peak), (pl, pl_peak) = (map(max, zip(*runs, strict=True)) for runs in (framework, plain))
    return Row(dataset, model, cfg.model.recursion_depth, batch_size, fw, pl, fw / pl, fw_peak, pl_peak)


def measure_rows(s: Settings) -> list[Row]:
    """Time the framework, then the plain loop, for every row; print each row as it ends."""
    header = f"{'dataset':8} {'model':8} {'depth':>5} {'batch':>6} {'framework img/s':>16} {'plain img/s':>12} "
    print(header + f"{'ratio':>6} {'fw peak MiB':>12} {'plain peak MiB':>15}", flush=True)
    rows = []
    for dataset in s.datasets:
        for model in s.models:
            for batch_size in s.batch_sizes:
                row = measure_row(s, dataset, model, train_config(s, dataset, model, batch_size))
                rows.append(row)
                print(
                    f"{dataset:8} {model:8} {row.depth:>5} {batch_size:>6} {row.framework_img_s:>16,.0f} "
                    f"{row.plain_img_s:>12,.0f} {row.ratio:>6.3f} {row.framework_peak_mib:>12,.0f} "
                    f"{row.plain_peak_mib:>15,.0f}",
                    flush=True,
                )
    return rows


def write_csv(rows: list[Row], s: Settings, threads: int) -> Path:
    """``<out_dir>/<time>.csv``: one line per row, with the device, precision, threads and clock."""
    s.out_dir.mkdir(parents=True, exist_ok=True)
    path = s.out_dir / f"{datetime.now():%Y-%m-%d_%H-%M-%S_%f}.csv"
    setup = {"device": str(s.device), "precision": s.precision, "threads": threads, "clock": s.clock}
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*setup, *asdict(rows[0])])
        writer.writeheader()
        for row in rows:
            writer.writerow(setup | {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(row).items()})
    return path


def benchmark(cfg: DictConfig) -> list[Row]:
    """Measure, print and write every row of ``cfg.bench``; Hydra must be initialised on ``conf/``."""
    s = settings(cfg.bench)
    default_threads = torch.get_num_threads()
    torch.set_num_threads(s.threads or default_threads)
    try:
        print(
            f"device {s.device} ({torch.cuda.get_device_name(s.device) if s.device.type == 'cuda' else 'cpu'}), "
            f"torch {torch.__version__}, lightning {L.__version__}, precision {s.precision}, "
            f"compile {s.compile}, channels_last {s.channels_last}, threads {torch.get_num_threads()}, clock {s.clock}"
        )
        rows = measure_rows(s)
    finally:  # an in-process caller (the tests) keeps its own thread count
        torch.set_num_threads(default_threads)
    path = write_csv(rows, s, threads=s.threads or default_threads)
    print(f"wrote {path}")
    print(f"min ratio: {min(r.ratio for r in rows):.3f}")
    return rows


@hydra.main(version_base="1.3", config_path=cli.CONF_DIR, config_name="bench")
def hydra_main(cfg: DictConfig) -> None:
    """Hydra's task: measure every row."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" banner per row
    with cli.one_line_errors():  # here, not only around Hydra, which would add a line of its own
        benchmark(cfg)


def main() -> None:
    """``python -m recursive_ae_gan.bench``: bad settings end in one ``error:`` line."""
    cli.run(hydra_main)


if __name__ == "__main__":
    main()
