"""Training throughput of the framework against plain PyTorch: ``python -m recursive_ae_gan.bench``.

For every dataset, network (``bench.nets``), model and batch size, the composed ``conf/train.yaml``'s
LightningModule, fitted by a real ``Trainer``, and ``PlainLoop``, the same training in a bare loop, train on the
same synthetic images in interleaved windows (F P P F ...) until the row's ratio is known to ``ci_half_width``;
it is printed with its 95% interval, and so is what the framework adds per step (its milliseconds over the plain
loop's), and every row goes to ``<out_dir>/<time>.csv``. A net that cannot take a dataset's images (``patch`` on
MNIST's 28x28) is left out for that dataset. The method and the figures: docs/benchmarks.md.
"""

from __future__ import annotations

import csv
import gc
import logging
import math
import resource
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime
from itertools import count
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra import compose
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from recursive_ae_gan.analysis.stats import summarize
from recursive_ae_gan.core import console
from recursive_ae_gan.core.atomic import atomic_open
from recursive_ae_gan.core.errors import UserError, user_error
from recursive_ae_gan.data import ImageDataModule, epoch_permutation
from recursive_ae_gan.models import VARIANTS
from recursive_ae_gan.models.autoencoder import build
from recursive_ae_gan.models.balance import ADV_WEIGHT_BOUNDS, BALANCE_POLICIES, BalanceSettings
from recursive_ae_gan.models.losses import GAME_LOSSES, fool_rates, reconstruction_losses
from recursive_ae_gan.networks import MLPDiscriminator

# The benchmarked datasets (conf/data/<name>.yaml) and their image shapes (C, H, W), which size the networks.
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
NETS_DIR = Path(console.CONF_DIR, "model", "net")  # bench.nets names a file here
PRECISIONS = ("32-true", "bf16-mixed")
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}

# What a null setting means on each device: the GPU rows are the fast path (docs/benchmarks.md).
DEVICE_DEFAULTS = {
    "cuda": {
        "batch_sizes": [64, 256, 1024],
        "warmup_steps": 30,
        "window_images": 8192,
        "precision": "bf16-mixed",
        "compile": True,
        "channels_last": True,
        "threads": None,
        "clock": "wall",
    },
    "cpu": {
        "batch_sizes": [64, 256],
        "warmup_steps": 3,
        "window_images": 1,  # one batch: the shorter the windows, the closer in time each pair's two are
        "precision": "32-true",
        "compile": False,
        "channels_last": False,
        "threads": 1,  # two threads beside another busy process wait on each other: see docs/benchmarks.md
        "clock": "process",  # this process's CPU time: blind to the time other processes take the core
    },
}
# bench.quick=true: a smoke run of every row in seconds, for the test suite.
QUICK = {"batch_sizes": [8], "num_images": 32, "warmup_steps": 1, "windows": 4, "window_images": 8}
Update = Callable[[torch.optim.Optimizer, torch.Tensor], None]  # one optimizer step of a loss
MIN_PAIRS = 20  # a row's interval rests on at least 10 quadruples (fewer where bench.windows caps it lower)


@dataclass(frozen=True)
class Plan:
    """``conf/bench.yaml``'s ``bench`` node with the device defaults and ``quick`` applied."""

    datasets: list[str]
    nets: list[str]
    models: list[str]
    depth: int
    batch_sizes: list[int]
    num_images: int
    warmup_steps: int
    windows: int
    ci_half_width: float
    window_images: int
    device: torch.device
    precision: str
    compile: bool
    channels_last: bool
    threads: int | None
    clock: str
    seed: int
    floor: bool
    out_dir: Path


def plan(bench: DictConfig) -> Plan:
    """Fill in the nulls for the device, apply ``quick``, and reject what cannot be measured."""
    values = OmegaConf.to_container(bench, resolve=True)
    device = values["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in DEVICE_DEFAULTS:
        raise UserError(f"bench.device={device!r} is not one of: cuda, cpu, null")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("bench.device=cuda but torch sees no GPU; leave bench.device=null to use the CPU")
    values |= {k: v for k, v in DEVICE_DEFAULTS[device].items() if values[k] is None}
    if values["threads"] is not None and values["threads"] < 0:
        raise UserError(f"bench.threads must be 0 (torch's default) or more, got {values['threads']}")
    values["threads"] = values["threads"] or None  # None: torch's default
    if values.pop("quick"):
        values |= QUICK
    nets = sorted(path.stem for path in NETS_DIR.glob("*.yaml"))
    for name, choices in [("datasets", SHAPES), ("nets", nets), ("models", VARIANTS)]:
        if not values[name] or not set(values[name]) <= set(choices):
            raise UserError(f"bench.{name}={values[name]} must list some of: {', '.join(choices)}")
    if all(takes(dataset, net) for dataset in values["datasets"] for net in values["nets"]):
        raise UserError(
            f"no net of bench.nets={values['nets']} takes the images of bench.datasets={values['datasets']}"
        )
    if values["clock"] not in CLOCKS:
        raise UserError(f"bench.clock={values['clock']!r} is not one of: {', '.join(CLOCKS)}")
    if values["clock"] == "process" and device == "cuda":
        raise UserError("bench.clock=process counts CPU time, not the GPU's work: use bench.clock=wall on cuda")
    if values["precision"] not in PRECISIONS:
        raise UserError(f"bench.precision={values['precision']!r} is not one of: {', '.join(PRECISIONS)}")
    for name in ("depth", "num_images", "warmup_steps", "window_images"):
        if values[name] < 1:
            raise UserError(f"bench.{name} must be at least 1, got {values[name]}")
    if values["windows"] < 4 or values["windows"] % 2:
        raise UserError(f"bench.windows must be even and at least 4 (pairs go in twos), got {values['windows']}")
    if not 0 < values["ci_half_width"] < 1:
        raise UserError(f"bench.ci_half_width must be between 0 and 1 (0.01: within 1%), got {values['ci_half_width']}")
    if not values["batch_sizes"] or min(values["batch_sizes"]) < 1:
        raise UserError(f"bench.batch_sizes={values['batch_sizes']} must list sizes of at least 1")
    if any(values["num_images"] % size for size in values["batch_sizes"]):
        raise UserError(  # a short last batch would be timed as a full one
            f"bench.num_images={values['num_images']} must be a multiple of every batch size {values['batch_sizes']}"
        )
    return Plan(**values | {"device": torch.device(device), "out_dir": Path(values["out_dir"])})


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


def pair_ratios(framework_s: Sequence[float], plain_s: Sequence[float]) -> list[float]:
    """framework / plain throughput of each pair of windows: the same images, so plain's time over framework's."""
    return [plain / framework for framework, plain in zip(framework_s, plain_s, strict=True)]


def quadruple_ratios(ratios: Sequence[float]) -> list[float]:
    """The geometric mean of each two consecutive pair ratios, one with the framework first, one with the plain
    loop first (``Interleave``): a factor the second window of a pair gains or loses cancels in it."""
    return [math.sqrt(a * b) for a, b in zip(ratios[::2], ratios[1::2], strict=True)]


@dataclass(frozen=True)
class RatioInterval:
    """A row's ratio (the geometric mean of its quadruple ratios) and its 95% t interval, from ``pairs`` pairs."""

    ratio: float
    low: float
    high: float
    pairs: int

    @property
    def log_half_width(self) -> float:
        """Half the interval's width in log space: 0.01 means the ratio is known to within about 1%."""
        return math.log(self.high / self.low) / 2


def ratio_interval(framework_s: Sequence[float], plain_s: Sequence[float]) -> RatioInterval:
    """Student's t over the quadruples' log ratios: the quadruple, not the pair, is the unit free of order bias.
    Needs at least two quadruples (four pairs)."""
    logs = [math.log(r) for r in quadruple_ratios(pair_ratios(framework_s, plain_s))]
    summary = summarize(logs)
    return RatioInterval(math.exp(summary.mean), math.exp(summary.low), math.exp(summary.high), len(framework_s))


@dataclass(frozen=True)
class Overhead:
    """What the framework adds per step, in milliseconds: framework minus plain, and its 95% t interval."""

    ms: float
    low: float
    high: float


def overhead(framework_s: Sequence[float], plain_s: Sequence[float], steps: int) -> Overhead:
    """Each pair's framework minus plain seconds per batch (``steps`` batches a window), in ms; the mean of each two
    consecutive pairs (one each way, as ``quadruple_ratios``: an order bias cancels); Student's t over those means.
    Needs at least two quadruples (four pairs)."""
    per_step = [(framework - plain) * 1000 / steps for framework, plain in zip(framework_s, plain_s, strict=True)]
    summary = summarize([(a + b) / 2 for a, b in zip(per_step[::2], per_step[1::2], strict=True)])
    return Overhead(summary.mean, summary.low, summary.high)


class PlainLoop:
    """The same training in a bare loop, what a skilled engineer writes without a framework.

    Same networks, initial weights, batches (order included), losses, fused Adam, recursion, D/AE
    alternation and balance policy (``models.balance``, the config's) as the framework, so that
    ``state_dict()`` matches the LightningModule's after the same batches. ``train(n)`` trains the
    next ``n`` batches, so the bench can run it in windows between the framework's.
    """

    def __init__(self, cfg: DictConfig) -> None:
        m, data = cfg.model, cfg.data
        self.adversarial = "discriminator" in m
        if self.adversarial and get_object(m.discriminator._target_) is not MLPDiscriminator:
            raise UserError("the plain loop builds the report's discriminator: model/discriminator=mlp")
        if self.adversarial and (m.get("r1_gamma") or m.get("d_scheduler") or m.get("d_translate")):
            raise UserError("the plain loop plays the game without R1, a D schedule or DiffAugment: leave them off")
        self.m, self.shape = m, tuple(data.image_shape)
        self.device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
        torch.manual_seed(cfg.seed)  # as the framework's model: the weights are seeded right before it is built
        self.net = build(m.net, self.shape).to(self.device)  # any autoencoder config: the report's or a tuned one
        if m.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.loss_name = m.loss or self.net.default_loss
        self.opt_ae = torch.optim.Adam(self.net.parameters(), lr=m.lr, betas=tuple(m.betas), fused=True)
        self.modules = {"net": self.net}
        if self.adversarial:
            self.disc = self.modules["discriminator"] = MLPDiscriminator(self.shape, m.discriminator.hidden)
            self.disc.to(self.device)
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=m.d_lr, betas=tuple(m.d_betas), fused=True)
            self.adv_weights = torch.full((m.recursion_depth + 1,), float(m.adv_weight), device=self.device)
            low, high = m.adv_weight_bounds or ADV_WEIGHT_BOUNDS[self.loss_name]
            self.balance = BALANCE_POLICIES[m.balance](BalanceSettings(m.target_gain, low, high))
            self.game_loss = GAME_LOSSES[m.adv_loss]
        if m.compile:
            for module in self.modules.values():
                module.compile()
        bf16 = cfg.trainer.precision == "bf16-mixed"
        self.autocast = torch.autocast(self.device.type, torch.bfloat16) if bf16 else nullcontext()
        self.images = synthetic_images(self.shape, data.num_images, data.seed).to(self.device)
        self.batches = self._batches(data.batch_size, data.seed)

    def _batches(self, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
        """The datamodule's batches, epoch after epoch: float in [0, 1] on the device."""
        for epoch in count():
            order = epoch_permutation(len(self.images), seed, epoch).to(self.device)
            for indices in order.split(batch_size):
                x = self.images[indices].float().div_(255)
                yield x.contiguous(memory_format=torch.channels_last) if self.m.channels_last else x

    def train(self, batches: int) -> None:
        """Train the next ``batches`` batches."""
        for _, x in zip(range(batches), self.batches, strict=False):
            with self.autocast:
                self.step(x)

    def reconstruction(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of steps 0..k ``(S, B, C, H, W)`` and their reconstruction loss, summed over the steps."""
        logits = recurse(self.net, x, self.m.recursion_depth)
        return logits, reconstruction_losses(logits, x, self.loss_name).sum()

    @staticmethod
    def update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimizer step of ``loss``."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def step(self, x: torch.Tensor, update: Update | None = None) -> None:
        """One batch; ``update(optimizer, loss)`` takes each optimizer step (``PlainLoop.update``, or
        ``LightningFloor``'s through Lightning)."""
        update = update or self.update
        logits, loss = self.reconstruction(x)
        if self.adversarial:
            fakes = torch.sigmoid(logits)
            steps, batch = fakes.shape[:2]
            d_logits = self.disc(torch.cat([x, fakes.detach().flatten(0, 1)]))  # real and every step's fakes
            fake_logits = d_logits[batch:].view(steps, batch)
            rates = fool_rates(fake_logits.detach())
            if self.balance.discriminator_steps(fake_logits.detach()):
                update(self.opt_d, self.game_loss.discriminator(d_logits[:batch], fake_logits))
            self.disc.requires_grad_(False)  # the autoencoder's step needs no gradients for D's weights
            g_per_step = self.game_loss.generator(self.disc(fakes.flatten(0, 1)).view(steps, batch))
            loss = loss + (self.adv_weights * g_per_step).mean()
        update(self.opt_ae, loss)
        if self.adversarial:
            self.disc.requires_grad_(True)
            self.balance.update(self.adv_weights, rates)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Keyed as the LightningModule's ``state_dict()``."""
        state = {f"{name}.{k}": v for name, module in self.modules.items() for k, v in module.state_dict().items()}
        return state | ({"adv_weights": self.adv_weights} if self.adversarial else {})


class LightningFloor(L.LightningModule):
    """The plain loop's step in a bare LightningModule, fitted by the same Trainer: what Lightning's own loop, hooks,
    optimizer wrappers and batch transfer cost per step (``bench.floor``), apart from what the project adds.

    Optimized as the project's modules are: automatically without the game (Lightning calls zero_grad, backward and
    step), by hand with ``self.optimizers()`` and ``manual_backward`` in the game. Its weights are ``plain``'s.
    """

    def __init__(self, plain: PlainLoop) -> None:
        super().__init__()
        self.plain = plain
        self.nets = torch.nn.ModuleDict(plain.modules)  # Lightning's train mode and device moves reach them
        self.automatic_optimization = not plain.adversarial

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        if self.automatic_optimization:
            return self.plain.reconstruction(x)[1]
        wrapped = dict(zip((self.plain.opt_ae, self.plain.opt_d), self.optimizers(), strict=True))

        def update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
            optimizer = wrapped[optimizer]
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()

        self.plain.step(x, update)
        return None

    def configure_optimizers(self):
        plain = self.plain
        return [plain.opt_ae, plain.opt_d] if plain.adversarial else plain.opt_ae


class Interleave(L.Callback):
    """Times the fit's batches in windows of ``steps`` and the plain loop's windows of as many between them, in
    the order F P P F F P P F ...: pair k is (framework window k, plain window k), and the pairs alternate which
    path runs first (F1 P1, then P2 F2, ...), so that whatever the second of two windows inherits from the first
    (caches, the allocator's and the garbage collector's state) favours each path equally in every two pairs.
    Garbage is collected, untimed, before every window (what lived before the first window frozen out of it).

    First ``warmup`` batches of each path untimed; then pairs until the ratio's 95% interval is within
    ``ci_half_width`` (at least ``MIN_PAIRS``), or ``windows`` pairs (an even number), after which the fit
    stops. ``framework_s`` and ``plain_s`` are the windows' seconds, pair by pair.
    """

    def __init__(
        self,
        plain: PlainLoop,
        warmup: int,
        windows: int,
        steps: int,
        sync: Callable[[], None],
        clock: Callable[[], float] = time.perf_counter,
        ci_half_width: float = 0.0,
    ) -> None:
        self.plain, self.warmup, self.windows, self.steps, self.sync, self.clock = (
            plain, warmup, windows, steps, sync, clock
        )  # fmt: skip
        self.ci_half_width = ci_half_width
        self.batches = 0
        self.framework_s: list[float] = []
        self.plain_s: list[float] = []
        self.start = 0.0

    def precise_enough(self) -> bool:
        """After a whole quadruple: the cap reached, or enough pairs for an interval as narrow as asked."""
        pairs = len(self.framework_s)
        if pairs % 2:
            return False
        if pairs >= self.windows:
            return True
        interval = ratio_interval(self.framework_s, self.plain_s) if pairs >= MIN_PAIRS else None
        return interval is not None and interval.log_half_width <= self.ci_half_width

    def begin(self) -> float:
        gc.collect()  # no window pays for the garbage of the one before
        return self.end()

    def end(self) -> float:
        self.sync()  # the GPU runs ahead of Python: time what it finished, not what was queued
        return self.clock()

    def time_plain(self) -> float:
        start = self.begin()
        self.plain.train(self.steps)
        return self.end() - start

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self.batches += 1
        timed = self.batches - self.warmup
        if timed == 0:
            self.plain.train(self.warmup)
            gc.collect()
            gc.freeze()  # what lives now outlives the windows: their collections scan only the objects made since
            self.start = self.begin()
        elif timed > 0 and timed % self.steps == 0:
            self.framework_s.append(self.end() - self.start)
            window = len(self.framework_s)
            if window % 2:  # F_k P_k (k odd), then P_k+1, which F_k+1 follows: F P P F
                self.plain_s.append(self.time_plain())
                self.plain_s.append(self.time_plain())
            trainer.should_stop = self.precise_enough()
            self.start = self.begin()

    def on_train_end(self, *args) -> None:
        gc.unfreeze()

    def on_exception(self, *args) -> None:
        gc.unfreeze()


@dataclass(frozen=True)
class Row:
    """One line of the table: each path's throughput over its timed windows, the ratio, its 95% interval and the
    pairs it took."""

    dataset: str
    model: str
    net: str
    depth: int
    batch: int
    framework_img_s: float
    plain_img_s: float
    ratio: float
    ratio_low: float
    ratio_high: float
    overhead_ms: float  # framework minus plain, milliseconds per step
    overhead_low: float
    overhead_high: float
    pairs: int
    peak_mib: float
    floor_ms: float | None = None  # LightningFloor minus plain (bench.floor): Lightning's own share of the overhead
    floor_low: float | None = None
    floor_high: float | None = None


def train_config(s: Plan, dataset: str, model: str, batch_size: int, net: str = "report") -> DictConfig:
    """``conf/train.yaml`` composed for one row (Hydra must be initialised on ``conf/``)."""
    depth = s.depth if model.startswith("rae") else 0
    overrides = [
        f"data={dataset}",
        f"model={model}",
        f"model/net={net}",
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
        "trainer.max_epochs=-1",  # Interleave stops the fit
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_checkpointing=false",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    if model.endswith("gan"):
        overrides.append("model.warmup_epochs=0")  # time the game, not the reconstruction-only warm-up
    return compose(config_name="train", overrides=overrides)


def run_both(
    cfg: DictConfig, timer: Callable[[PlainLoop], Interleave], floor: bool = False
) -> tuple[L.LightningModule, Interleave]:
    """Fit the composed LightningModule (``floor``: a ``LightningFloor``) with a real Trainer, the plain loop
    interleaved by ``timer(plain)``."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    if floor:
        model = LightningFloor(PlainLoop(cfg))
    else:
        torch.manual_seed(cfg.seed)  # as train(): the weights are seeded right before the model is built
        model = instantiate(cfg.model, image_shape=list(datamodule.image_shape))
    interleave = timer(PlainLoop(cfg))
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[interleave])
    with warnings.catch_warnings():
        # LightningFloor has no validation_step, and the bench validates nothing: Lightning's note that it skips
        # the datamodule's validation loader says nothing here.
        warnings.filterwarnings("ignore", message="You passed in a `val_dataloader` but have no `validation_step`")
        trainer.fit(model, datamodule=datamodule)
    return model, interleave


def recurse(net: torch.nn.Module, x: torch.Tensor, depth: int) -> torch.Tensor:
    """Logits of steps 0..depth, each step fed the previous one's image: ``(depth + 1, B, C, H, W)``."""
    steps = [net(x)]
    for _ in range(depth):
        steps.append(net(torch.sigmoid(steps[-1])))
    return torch.stack(steps) if depth else steps[0].unsqueeze(0)


def measure_row(s: Plan, dataset: str, net: str, model: str, cfg: DictConfig) -> Row:
    """Both paths interleaved over one fit; the row's medians, quartiles and peak memory."""
    batch_size = cfg.data.batch_size
    cuda = s.device.type == "cuda"
    if cuda:
        gc.collect()  # the previous row's Trainer and modules sit in reference cycles, holding GPU memory
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(s.device)
    if s.compile:  # every row compiles afresh: a row never runs eager for hitting dynamo's recompilation limit
        torch.compiler.reset()
    sync = torch.cuda.synchronize if cuda else lambda: None
    steps = max(1, s.window_images // batch_size)

    def timer(plain: PlainLoop) -> Interleave:
        return Interleave(plain, s.warmup_steps, s.windows, steps, sync, CLOCKS[s.clock], s.ci_half_width)

    _, timed = run_both(cfg, timer)
    if cuda:
        peak = torch.cuda.max_memory_allocated(s.device) / 2**20
    else:  # the process's peak so far (Linux reports KiB): it cannot be reset per row
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    interval = ratio_interval(timed.framework_s, timed.plain_s)
    extra = overhead(timed.framework_s, timed.plain_s, steps)
    images = interval.pairs * steps * batch_size
    framework, plain = (images / sum(times) for times in (timed.framework_s, timed.plain_s))
    floor = None
    if s.floor:  # the same row again, LightningFloor in place of the project's module
        if s.compile:
            torch.compiler.reset()
        _, bare = run_both(cfg, timer, floor=True)
        floor = overhead(bare.framework_s, bare.plain_s, steps)
    return Row(
        dataset, model, net, cfg.model.recursion_depth, batch_size, framework, plain,
        interval.ratio, interval.low, interval.high, extra.ms, extra.low, extra.high, interval.pairs, peak,
        *((floor.ms, floor.low, floor.high) if floor else ()),
    )  # fmt: skip


def takes(dataset: str, net: str) -> str | None:
    """Why ``net`` (a ``conf/model/net/`` name) cannot take ``dataset``'s images (its own one-line refusal), or None."""
    try:
        build(OmegaConf.load(NETS_DIR / f"{net}.yaml"), SHAPES[dataset])
    except Exception as error:
        if (refusal := user_error(error)) is None:
            raise
        return str(refusal)
    return None


def measure_rows(s: Plan) -> list[Row]:
    """Time every row; print each as it ends."""
    print(
        f"{'dataset':8} {'model':8} {'net':13} {'depth':>5} {'batch':>6} {'framework img/s':>16} {'plain img/s':>12} "
        f"{'ratio':>6} {'95% interval':>13} {'+ms/step':>8} {'95% interval':>13} {'pairs':>5} {'peak MiB':>9}"
        + (f" {'floor +ms':>9} {'95% interval':>13}" if s.floor else ""),
        flush=True,
    )
    rows = []
    for dataset in s.datasets:
        for net in s.nets:
            if (refusal := takes(dataset, net)) is not None:
                print(f"{dataset:8} {'':8} {net:13} left out: {refusal}", flush=True)
                continue
            for model in s.models:
                for batch_size in s.batch_sizes:
                    row = measure_row(s, dataset, net, model, train_config(s, dataset, model, batch_size, net))
                    rows.append(row)
                    print(
                        f"{dataset:8} {model:8} {net:13} {row.depth:>5} {batch_size:>6} {row.framework_img_s:>16,.0f} "
                        f"{row.plain_img_s:>12,.0f} {row.ratio:>6.3f} {row.ratio_low:>6.3f}-{row.ratio_high:<6.3f} "
                        f"{row.overhead_ms:>8.2f} {row.overhead_low:>6.2f}-{row.overhead_high:<6.2f} "
                        f"{row.pairs:>5} {row.peak_mib:>9,.0f}"
                        + (f" {row.floor_ms:>9.2f} {row.floor_low:>6.2f}-{row.floor_high:<6.2f}" if s.floor else ""),
                        flush=True,
                    )
    return rows


def write_csv(rows: list[Row], s: Plan, threads: int) -> Path:
    """``<out_dir>/<time>.csv``: one line per row, with the device, precision, threads and clock."""
    s.out_dir.mkdir(parents=True, exist_ok=True)
    path = s.out_dir / f"{datetime.now():%Y-%m-%d_%H-%M-%S_%f}.csv"
    setup = {"device": str(s.device), "precision": s.precision, "threads": threads, "clock": s.clock}
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*setup, *asdict(rows[0])])
        writer.writeheader()
        for row in rows:
            writer.writerow(setup | {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(row).items()})
    return path


def benchmark(cfg: DictConfig) -> list[Row]:
    """Measure, print and write every row of ``cfg.bench``; Hydra must be initialised on ``conf/``."""
    s = plan(cfg.bench)
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
    print(f"max overhead: {max(r.overhead_ms for r in rows):.2f} ms/step")
    print(f"min ratio: {min(r.ratio for r in rows):.3f}")
    return rows


@hydra.main(version_base="1.3", config_path=console.CONF_DIR, config_name="bench")
def hydra_main(cfg: DictConfig) -> None:
    """Hydra's task: measure every row."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" banner per row
    with console.one_line_errors():  # here, not only around Hydra, which would add a line of its own
        benchmark(cfg)


def main() -> None:
    """``python -m recursive_ae_gan.bench``: bad settings end in one ``error:`` line."""
    console.run(hydra_main)
