"""One command for a lent GPU: ``python -m recursive_ae_gan.gpu_check`` (``make gpu-check``), one markdown report.

On a CIFAR10-shaped fixture it writes itself (no datasets, no network), section by section: every model trains
with ``trainer=gpu`` (and compiled, channels-last); the bench's GPU rows, with what the framework adds per step
(profiled where a ratio is below 0.95); sweep throughput with ``hydra/launcher=gpus`` at each ``jobs_per_gpu``;
with two GPUs, the game under DDP. The report is rewritten after every section; the exit status is 1 when a check
failed. ``--quick``: the same on the CPU in under a minute (the test suite runs it). Docs: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pickle
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from recursive_ae_gan.analysis.tables import markdown_table
from recursive_ae_gan.core import console
from recursive_ae_gan.core.atomic import atomic_write
from recursive_ae_gan.core.errors import first_line
from recursive_ae_gan.models import VARIANTS
from recursive_ae_gan.perf import bench
from recursive_ae_gan.run.train import train
from recursive_ae_gan.sweeps.gpus import visible_gpus

SECTIONS = ("train", "bench", "sweep", "ddp")
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


@dataclass(frozen=True)
class Size:
    """How big each section runs: the GPU's protocol, or ``--quick``'s on the CPU."""

    train_images: int  # the training split; the validation split and the test set are a fifth of it each
    batch_size: int
    epochs: int
    bench: list[str]  # bench overrides
    sweep_epochs: int
    sweep_rounds: int  # jobs per sweep = jobs_per_gpu x GPUs x rounds


GPU = Size(10_000, 256, 3, ["bench.windows=8", "bench.window_images=8192"], 2, 2)
QUICK = Size(64, 16, 2, ["bench.quick=true", "bench.device=cpu"], 1, 1)


def blobs(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    """``n`` colour images ``(n, 3, size, size)`` uint8: a soft disc of random place, radius and tint each."""
    yy, xx = np.mgrid[0:size, 0:size]
    centres = rng.uniform(0.25, 0.75, size=(n, 2, 1, 1)) * size
    radius = rng.uniform(0.15, 0.3, size=(n, 1, 1)) * size
    disc = np.clip(1.2 - np.hypot(yy - centres[:, 0], xx - centres[:, 1]) / radius, 0, 1)  # (n, size, size)
    tint = rng.uniform(0.3, 1.0, size=(n, 3, 1, 1))
    return (disc[:, None] * tint * 255).astype(np.uint8)


def write_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """CIFAR10's pickled batches under ``root/cifar-10-batches-py`` (load them with ``data.verify=false``)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shares = [len(part) for part in np.array_split(np.arange(n_train), len(CIFAR_BATCHES))]
    for name, n in [*zip(CIFAR_BATCHES, shares, strict=True), ("test_batch", n_test)]:
        entry = {"data": blobs(rng, n).reshape(n, -1), "labels": rng.integers(0, 10, size=n).tolist()}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return root


class StepProfiler(L.Callback):
    """Profiles ``steps`` training batches after ``skip`` (torch.profiler, CPU and CUDA), then stops the fit;
    ``seconds`` is their wall time, the device synced at both ends."""

    def __init__(self, skip: int, steps: int) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profile = torch.profiler.profile(activities=activities)
        self.skip, self.steps, self.batches, self.seconds = skip, steps, 0, 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.batches += 1
        if self.batches in (self.skip, self.skip + self.steps):
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
            if self.batches == self.skip:
                self.profile.start()
                self.seconds = -time.perf_counter()
            else:
                self.seconds += time.perf_counter()
                self.profile.stop()
                trainer.should_stop = True


class EpochTimer(L.Callback):
    """Writes ``path`` (JSON): the wall seconds of every training epoch (its validation included, which runs
    before ``on_train_epoch_end``), the device synced at both ends."""

    def __init__(self, path: str) -> None:
        self.path, self.seconds, self.start = Path(path), [], 0.0

    def _now(self, module: L.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = self._now(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(self._now(pl_module) - self.start)
        atomic_write(self.path, json.dumps(self.seconds))


@dataclass
class CheckReport:
    """The markdown report, rewritten to ``path`` after every section."""

    path: Path
    title: str
    sections: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.sections.append(text)
        self.write()

    def fail(self, what: str) -> None:
        self.failures.append(what)

    def write(self) -> None:
        verdict = "all checks passed" if not self.failures else "FAILED: " + "; ".join(self.failures)
        atomic_write(self.path, f"{self.title}\n\n**{verdict}**\n\n" + "\n\n".join(self.sections) + "\n")


def versions() -> str:
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    rows = [
        ("GPUs", ", ".join(gpus) or "none (CPU)"),
        ("CPU cores", os.cpu_count()),
        ("python", platform.python_version()),
        ("torch", f"{torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"),
        ("lightning", L.__version__),
        ("platform", platform.platform()),
    ]
    return "### Versions\n\n" + markdown_table(["", ""], rows)


def compose_train(overrides: Sequence[str], out: Path) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides``, its run directory ``out``."""
    with initialize_config_dir(config_dir=console.CONF_DIR, version_base="1.3"):
        cfg = compose("train", list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def data_overrides(root: Path, size: Size) -> list[str]:
    n = size.train_images
    return [
        "data=cifar10",
        f"data.root={root}",
        "data.download=false",
        "data.verify=false",
        f"data.train_size={n}",
        f"data.val_size={n // 5}",
        f"data.test_size={n // 5}",
        f"data.batch_size={size.batch_size}",
    ]


def device_overrides(quick: bool) -> list[str]:
    """``trainer=gpu``'s defaults (bf16-mixed, on-device data); ``--quick`` keeps them on the CPU."""
    return ["trainer=gpu", *(["trainer.accelerator=cpu"] if quick else []), "trainer.enable_progress_bar=false"]


def logged_losses(metrics_csv: Path) -> tuple[list[float], list[float]]:
    """The CSV logger's values of every ``loss`` column, and the validation loss of each epoch in order."""
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    losses = [float(v) for row in rows for k, v in row.items() if "loss" in k and v]
    val = [float(row["val/loss"]) for row in rows if row.get("val/loss")]
    return losses, val


def train_section(root: Path, work: Path, size: Size, quick: bool, models: Sequence[str], report: CheckReport) -> None:
    """Every model, with the defaults of trainer=gpu and with compile + channels_last: finite and learning."""
    variants = {"defaults": [], "compile + channels_last": ["model.compile=true", "model.channels_last=true"]}
    if quick:  # compiling takes minutes on a CPU: channels_last alone
        variants = {"defaults": [], "channels_last": ["model.channels_last=true"]}
    rows = []
    for model in models:
        for variant, switches in variants.items():
            out = work / "train" / f"{model}_{variant.split()[0]}"
            overrides = [
                *data_overrides(root, size),
                *device_overrides(quick),
                f"model={model}",
                *(["model.warmup_epochs=1"] if model.endswith("gan") else []),
                *switches,
                f"trainer.max_epochs={size.epochs}",
                "logger=csv",
                f"paths.log_dir={work}",
                f"+callbacks.epoch_timer._target_={EpochTimer.__module__}.{EpochTimer.__qualname__}",
                f"+callbacks.epoch_timer.path={out / 'epochs.json'}",
            ]
            if "model.compile=true" in switches:
                torch.compiler.reset()  # each run compiles afresh, within the recompilation limit
            start = time.perf_counter()
            try:
                train(compose_train(overrides, out))
                losses, val = logged_losses(out / "csv" / "metrics.csv")
                epochs = json.loads((out / "epochs.json").read_text())
                finite = all(math.isfinite(v) for v in losses)
                falling = len(val) >= 2 and val[-1] < val[0]
                verdict = "ok" if finite and falling else "FAILED: " + ("non-finite loss" if not finite else "val loss")
                row = [" → ".join(f"{v:.4f}" for v in val[:: max(1, len(val) - 1)]), f"{min(epochs[1:] or epochs):.2f}"]
            except Exception as err:  # one failed run must not hide the others' results
                verdict, row = f"FAILED: {first_line(err)}", ["", ""]
            if verdict != "ok":
                report.fail(f"train {model} ({variant})")
            rows.append([model, variant, *row, f"{time.perf_counter() - start:.0f}", verdict])
            print(f"train {model} {variant}: {verdict}", flush=True)
    # An epoch's time includes its validation; the first epoch (compilation, autotuning) counts only if alone.
    header = ["model", "variant", "val loss, epoch 0 → last", "fastest epoch s (train + val)", "run s", "check"]
    report.add(
        f"### Training: every model, {size.epochs} epochs of {size.train_images:,} CIFAR10-shaped images, "
        f"batch {size.batch_size}\n\n" + markdown_table(header, rows)
    )


def bench_section(size: Size, models: Sequence[str], datasets: Sequence[str], report: CheckReport, work: Path) -> None:
    """``recursive_ae_gan.bench``'s table, in this process."""
    overrides = [
        *size.bench,
        f"bench.models=[{','.join(models)}]",
        f"bench.datasets=[{','.join(datasets)}]",
        f"bench.out_dir={work / 'bench'}",
    ]
    torch.compiler.reset()
    with initialize_config_dir(config_dir=console.CONF_DIR, version_base="1.3"):
        cfg = compose("bench", overrides)
        s = bench.plan(cfg.bench)
        rows = bench.benchmark(cfg)
    header = [
        "dataset", "model", "net", "depth", "batch", "framework img/s", "plain img/s", "ratio", "95% interval",
        "framework − plain, ms/step", "95% interval", "pairs", "peak MiB",
    ]  # fmt: skip
    lines = [
        [r.dataset, r.model, r.net, r.depth, r.batch, f"{r.framework_img_s:,.0f}", f"{r.plain_img_s:,.0f}",
         f"{r.ratio:.3f}", f"{r.ratio_low:.3f} – {r.ratio_high:.3f}", f"{r.overhead_ms:.2f}",
         f"{r.overhead_low:.2f} – {r.overhead_high:.2f}", r.pairs, f"{r.peak_mib:,.0f}"]
        for r in rows
    ]  # fmt: skip
    settings_line = (
        f"`python -m recursive_ae_gan.bench {' '.join(overrides[:-1])}`: {s.device}, {s.precision}, "
        f"compile {s.compile}, channels_last {s.channels_last}, at most {s.windows} pairs of {s.window_images} images"
    )
    report.add(
        f"### Bench: framework vs plain PyTorch\n\n{settings_line}\n\n{markdown_table(header, lines)}\n\n"
        f"`max overhead: {max(r.overhead_ms for r in rows):.2f} ms/step`, `min ratio: {min(r.ratio for r in rows):.3f}`"
    )
    lowest = min(rows, key=lambda r: r.ratio)
    if lowest.ratio < 0.95 or s.device.type == "cpu":  # on the CPU (--quick) always, so that it stays tested
        profile_row(s, lowest, report, work)


def profile_row(s: bench.Plan, row: bench.Row, report: CheckReport, work: Path, steps: int = 20) -> None:
    """Where the framework's time goes in the lowest row: ``steps`` training batches under torch.profiler, after
    the bench's warm-up; the top operators, the share of the wall time the GPU was busy, and the trace."""
    with initialize_config_dir(config_dir=console.CONF_DIR, version_base="1.3"):
        cfg = bench.train_config(s, row.dataset, row.model, row.batch, row.net)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = instantiate(cfg.model, image_shape=list(datamodule.image_shape))
    profiler = StepProfiler(skip=s.warmup_steps, steps=steps)
    instantiate(cfg.trainer, logger=False, callbacks=[profiler]).fit(model, datamodule=datamodule)
    trace = work / "profile" / f"{row.dataset}_{row.model}_{row.batch}.json"
    trace.parent.mkdir(parents=True, exist_ok=True)
    profiler.profile.export_chrome_trace(str(trace))
    events = profiler.profile.key_averages()
    kernels = [e for e in profiler.profile.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    device_s = sum(e.device_time_total for e in kernels) / 1e6  # the kernels themselves, not the ops launching them
    busy = (
        f"the GPU was busy {100 * device_s / profiler.seconds:.0f}% of the wall time (the rest is gaps between "
        "kernels: the host's overhead)"
        if torch.cuda.is_available()
        else "on the CPU: no GPU timeline"
    )
    sort = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    report.add(
        f"### Profile: {row.dataset} {row.model} batch {row.batch} (ratio {row.ratio:.3f}), {steps} framework "
        f"steps\n\n{1e3 * profiler.seconds / steps:.2f} ms per step; {busy}. Trace (chrome://tracing, "
        f"Perfetto): `{trace}`.\n\n"
        f"```\n{events.table(sort_by=sort, row_limit=15)}\n```"
    )


def run_cli(args: Sequence[str], quick: bool) -> subprocess.CompletedProcess:
    """``python -m recursive_ae_gan.train ARGS``; ``--quick``'s tiny models run one thread per process."""
    env = os.environ | ({"OMP_NUM_THREADS": "1"} if quick else {})
    return subprocess.run(
        [sys.executable, "-m", "recursive_ae_gan.train", *args], capture_output=True, text=True, env=env
    )


def sweep_section(
    root: Path, work: Path, size: Size, quick: bool, jobs_per_gpu: Sequence[int], report: CheckReport
) -> None:
    """Runs per minute of a short protocol (CIFAR10 AE) through the CLI multirun with hydra/launcher=gpus."""
    gpus = len(visible_gpus()) if not quick else 0
    rows = []
    for per_gpu in jobs_per_gpu:
        jobs = per_gpu * max(1, gpus) * size.sweep_rounds
        sweep_dir = work / "sweep" / f"jobs_per_gpu_{per_gpu}"
        args = [
            "--multirun",
            "hydra/launcher=gpus",
            f"jobs_per_gpu={per_gpu}",
            *data_overrides(root, size),
            *device_overrides(quick),
            "model=ae",
            f"trainer.max_epochs={size.sweep_epochs}",
            "collapse_threshold=0",  # a job counts when it runs to the end: this measures throughput
            "logger=csv",
            f"paths.log_dir={work}",
            f"hydra.sweep.dir={sweep_dir}",
            f"seed={','.join(map(str, range(jobs)))}",
        ]
        start = time.perf_counter()
        process = run_cli(args, quick)
        wall = time.perf_counter() - start
        statuses = [json.loads(p.read_text())["status"] for p in sweep_dir.glob("*/metrics.json")]
        ok = statuses.count("ok")
        verdict = "ok" if process.returncode == 0 and ok == jobs else f"FAILED: {ok} of {jobs} ok"
        if verdict != "ok":
            report.fail(f"sweep jobs_per_gpu={per_gpu}")
            sweep_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(sweep_dir / "stderr.txt", process.stderr)
        rows.append([per_gpu, jobs, f"{wall:.0f}", f"{60 * jobs / wall:.1f}", verdict])
        print(f"sweep jobs_per_gpu={per_gpu}: {verdict}", flush=True)
    protocol = (
        f"CIFAR10 AE, {size.sweep_epochs} epoch(s) of {size.train_images:,} images with validation and test; "
        + (f"{gpus} GPU(s)" if gpus else "no GPU: jobs_per_gpu jobs at once on the CPU")
    )
    report.add(
        f"### Sweep throughput: `hydra/launcher=gpus`\n\n{protocol}; a job is one run of the CLI's multirun.\n\n"
        + markdown_table(["jobs_per_gpu", "jobs", "wall s", "runs per minute", "check"], rows)
    )


def ddp_overrides(root: Path, size: Size) -> list[str]:
    """The game (rae_gan) on two GPUs: ``trainer=gpu`` with ``trainer/strategy=ddp``."""
    return [
        *data_overrides(root, size),
        "trainer=gpu",
        "trainer/strategy=ddp",
        "trainer.devices=2",
        "trainer.enable_progress_bar=false",
        "model=rae_gan",
        "model.warmup_epochs=1",
        f"trainer.max_epochs={size.epochs}",
        "logger=csv",
    ]


def ddp_section(root: Path, work: Path, size: Size, report: CheckReport) -> None:
    """The game over two GPUs through the CLI: it must end with status ok."""
    out = work / "ddp"
    args = [*ddp_overrides(root, size), f"hydra.run.dir={out}"]
    start = time.perf_counter()
    process = run_cli(args, quick=False)
    wall = time.perf_counter() - start
    metrics = out / "metrics.json"
    status = json.loads(metrics.read_text())["status"] if metrics.exists() else "no metrics.json"
    verdict = "ok" if process.returncode == 0 and status == "ok" else f"FAILED: {status}"
    if verdict != "ok":
        report.fail("ddp")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "stderr.txt", process.stderr)
    command = "`python -m recursive_ae_gan.train trainer=gpu trainer/strategy=ddp trainer.devices=2 model=rae_gan`"
    report.add(
        "### DDP: the game on 2 GPUs\n\n"
        + markdown_table(["command", "wall s", "check"], [[command, f"{wall:.0f}", verdict]])
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m recursive_ae_gan.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the same checks on the CPU, tiny (the test suite's)")
    parser.add_argument("--out", type=Path, help="the report; default: <workdir>/report.md")
    parser.add_argument("--workdir", type=Path, help="data and runs; default: outputs/gpu_check/<time>")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"some of {','.join(SECTIONS)}")
    parser.add_argument("--models", default=",".join(VARIANTS), help="the models trained and benched")
    parser.add_argument("--datasets", default="mnist,cifar10", help="the bench's datasets")
    parser.add_argument("--jobs-per-gpu", help="the sweep's settings; default: 1,2,4,8 (--quick: 1,2)")
    return parser.parse_args(argv)


def listed(value: str, choices: Sequence[str], flag: str) -> list[str]:
    items = [v for v in value.split(",") if v]
    if not items or not set(items) <= set(choices):
        raise SystemExit(f"error: {flag}={value} must list some of: {', '.join(choices)}")
    return items


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sections; returns the exit status (1 when a check failed)."""
    args = parse_args(argv)
    sections = listed(args.sections, SECTIONS, "--sections")
    models = listed(args.models, list(VARIANTS), "--models")
    datasets = listed(args.datasets, list(bench.SHAPES), "--datasets")
    jobs_per_gpu = [int(j) for j in (args.jobs_per_gpu or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    if not args.quick and not torch.cuda.is_available():
        raise SystemExit("error: torch sees no GPU; --quick runs the checks on the CPU")
    size = QUICK if args.quick else GPU
    work = args.workdir or Path("outputs", "gpu_check", f"{datetime.now():%Y-%m-%d_%H-%M-%S}")
    work.mkdir(parents=True, exist_ok=True)
    mode = "--quick, on the CPU" if args.quick else "on the GPU"
    report = CheckReport(
        args.out or work / "report.md", f"## `make gpu-check` ({mode}), {datetime.now():%Y-%m-%d %H:%M}"
    )
    report.add(versions())
    root = write_cifar10(work / "data", size.train_images * 7 // 5, size.train_images // 5)
    steps: dict[str, Callable[[], None]] = {
        "train": lambda: train_section(root, work, size, args.quick, models, report),
        "bench": lambda: bench_section(size, models, datasets, report, work),
        "sweep": lambda: sweep_section(root, work, size, args.quick, jobs_per_gpu, report),
        "ddp": lambda: ddp_section(root, work, size, report),
    }
    threads = torch.get_num_threads()
    if args.quick:
        torch.set_num_threads(1)  # the tiny models: one thread is faster than two that wait on each other
    times = []
    try:
        for name in sections:
            if name == "ddp" and (args.quick or torch.cuda.device_count() < 2):
                report.add("### DDP\n\nskipped: fewer than two GPUs" + (" (--quick)" if args.quick else ""))
                continue
            start = time.perf_counter()
            try:
                steps[name]()
            except Exception as err:  # a section that breaks must not cost the others' results
                report.fail(name)
                atomic_write(work / f"{name}_traceback.txt", traceback.format_exc())
                where = f"traceback: `{work / name}_traceback.txt`"
                report.add(f"### {name}: FAILED\n\n`{first_line(err)}` ({where})")
            times.append([name, f"{time.perf_counter() - start:.0f}"])
    finally:
        torch.set_num_threads(threads)
    report.add("### Wall time per section\n\n" + markdown_table(["section", "s"], times))
    print(f"wrote {report.path}" + ("" if not report.failures else f"; failed: {', '.join(report.failures)}"))
    return 1 if report.failures else 0
