"""The benchmark: a quick run end to end, the plain loop's fidelity, the interleaved timer, its arithmetic and
bad settings.

No assertion is about speed: the CPU is shared and the numbers belong in docs/benchmarks.md.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import scipy.stats
import torch
from helpers import CONF_DIR, run_entry_forked
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.perf import bench


@pytest.fixture
def hydra_conf() -> Iterator[None]:
    """Hydra initialised on ``conf/``: ``benchmark`` composes ``train.yaml`` for every row."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        yield


def test_quick_run_prints_every_row_and_writes_the_csv(
    hydra_conf: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    threads = torch.get_num_threads()
    # One thread: the smoke run must not fight other processes for the cores. One dataset's rows: each row costs a
    # Trainer's setup (a CIFAR10 row trains in test_plain_loop_trains_exactly_like_the_framework).
    overrides = ["bench.quick=true", "bench.datasets=[mnist]", "bench.device=cpu", "bench.threads=1"]
    cfg = compose("bench", [*overrides, f"bench.out_dir={tmp_path}"])
    rows = bench.benchmark(cfg)

    assert torch.get_num_threads() == threads  # the caller's setting is restored
    expected = [("mnist", m) for m in ("ae", "rae", "ae_gan", "rae_gan")]
    assert [(r.dataset, r.model) for r in rows] == expected
    assert [r.depth for r in rows] == [0, 2, 0, 2]
    assert all(r.batch == 8 and r.framework_img_s > 0 and r.plain_img_s > 0 for r in rows)
    assert all(0 < r.ratio_low <= r.ratio <= r.ratio_high and r.pairs == 4 for r in rows)  # quick: 4 pairs
    assert all(r.overhead_low <= r.overhead_ms <= r.overhead_high for r in rows)
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"min ratio: {min(r.ratio for r in rows):.3f}"
    assert out[-2] == f"max overhead: {max(r.overhead_ms for r in rows):.2f} ms/step"
    assert sum(line.split()[:2] == [d, m] for line in out for d, m in expected) == len(expected)
    # The default nets are the report's and patch, which takes no 28x28 images: left out for MNIST, in one line.
    (left_out,) = [line for line in out if "left out" in line]
    assert left_out.split()[:2] == ["mnist", "patch"] and "model.net.patch=8 must cut" in left_out

    (path,) = tmp_path.glob("*.csv")
    assert out[-3] == f"wrote {path}"
    with path.open() as f:
        written = list(csv.DictReader(f))
    assert [(w["dataset"], w["model"]) for w in written] == expected
    for w, row in zip(written, rows, strict=True):
        assert (w["device"], w["precision"], w["threads"], w["clock"]) == ("cpu", "32-true", "1", "process")
        assert [float(w[k]) for k in ("ratio", "ratio_low", "ratio_high")] == pytest.approx(
            [row.ratio, row.ratio_low, row.ratio_high], rel=1e-3
        )
        assert [float(w[k]) for k in ("overhead_ms", "overhead_low", "overhead_high")] == pytest.approx(
            [row.overhead_ms, row.overhead_low, row.overhead_high], abs=1e-4
        )
        assert int(w["pairs"]) == row.pairs
        assert float(w["peak_mib"]) > 0


@pytest.mark.parametrize(
    ("dataset", "model", "floor"),
    [("mnist", "rae_gan", False), ("cifar10", "ae", False), ("mnist", "rae_gan", True), ("cifar10", "ae", True)],
)
def test_plain_loop_trains_exactly_like_the_framework(hydra_conf: None, dataset: str, model: str, floor: bool) -> None:
    """Same weights after the same batches, interleaved in one fit as the bench runs them: the ratio compares
    the same work. So does ``LightningFloor``, the plain loop's step inside Lightning (``bench.floor``)."""
    s = bench.plan(compose("bench", ["bench.quick=true", "bench.device=cpu"]).bench)
    cfg = bench.train_config(s, dataset, model, batch_size=8)
    torch.manual_seed(cfg.seed)
    initial = instantiate(cfg.model, image_shape=list(bench.SHAPES[dataset])).state_dict()

    # One warm-up batch, then two windows of two batches: 5 batches of each path, over 2 epochs of 4 batches.
    module, timed = bench.run_both(cfg, lambda plain: bench.Interleave(plain, 1, 2, 2, sync=lambda: None), floor)

    assert timed.batches == 5 and len(timed.framework_s) == len(timed.plain_s) == 2
    assert isinstance(module, bench.LightningFloor) == floor
    framework, plain = (module.plain if floor else module).state_dict(), timed.plain.state_dict()
    assert framework.keys() == plain.keys()
    torch.testing.assert_close(plain, framework)
    trained = [k for k in initial if not torch.equal(initial[k], framework[k])]
    assert any(k.startswith("net.") for k in trained)
    assert any(k.startswith("discriminator.") for k in trained) == model.endswith("gan")


def test_the_floor_column(hydra_conf: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``bench.floor=true``: every row also times ``LightningFloor`` against the plain loop; its ms per step are
    printed and written beside the framework's (the same arithmetic, ``bench.overhead``)."""
    overrides = [
        "bench.quick=true",
        "bench.datasets=[mnist]",
        "bench.nets=[report]",
        "bench.models=[ae]",
        "bench.device=cpu",
    ]
    rows = bench.benchmark(compose("bench", [*overrides, "bench.floor=true", f"bench.out_dir={tmp_path}"]))

    (row,) = rows
    assert row.floor_low <= row.floor_ms <= row.floor_high
    out = capsys.readouterr().out.splitlines()
    header, line = [line for line in out if line.split()[0] in ("dataset", "mnist")]
    assert header.split()[-4:] == ["floor", "+ms", "95%", "interval"]
    assert line.split()[-2:] == [f"{row.floor_ms:.2f}", f"{row.floor_low:.2f}-{row.floor_high:.2f}"]
    with next(tmp_path.glob("*.csv")).open() as f:
        (written,) = csv.DictReader(f)
    assert [float(written[k]) for k in ("floor_ms", "floor_low", "floor_high")] == pytest.approx(
        [row.floor_ms, row.floor_low, row.floor_high], abs=1e-4
    )


class CountingPlainLoop:
    """A stand-in for ``PlainLoop``: records how many batches each call trains."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def train(self, batches: int) -> None:
        self.calls.append(batches)


class StopFlag:
    should_stop = False


def test_interleave_alternates_which_path_runs_first_and_times_each_window() -> None:
    """F P P F F P P F: each clock read is a window's start or end, in the order the windows run."""
    # The warm-up's end, then F1 (10-11), P1 (11.5-12), P2 (12-13), F2 (13-15), F3 (15-16), P3 (16-17), P4 (17-19), F4.
    times = iter([10.0, 11.0, 11.5, 12.0, 12.0, 13.0, 13.0, 15.0, 15.0, 16.0, 16.0, 17.0, 17.0, 19.0, 19.0, 20.0, 20.0])
    plain, trainer, syncs, collections = CountingPlainLoop(), StopFlag(), [], []
    timer = bench.Interleave(
        plain, warmup=2, windows=4, steps=2, sync=lambda: syncs.append(1), clock=lambda: next(times)
    )
    stops = []
    with (
        mock.patch("gc.collect", side_effect=lambda: collections.append("collect")),
        mock.patch("gc.freeze", side_effect=lambda: collections.append("freeze")),
    ):
        for _ in range(10):  # the framework's batches: 2 warm-up, then 4 windows of 2
            timer.on_train_batch_end(trainer)
            stops.append(trainer.should_stop)
    assert plain.calls == [2, 2, 2, 2, 2]  # its warm-up, then P1 P2 after F1 and P3 P4 after F3
    assert stops == [False] * 9 + [True] and len(syncs) == 17  # a sync before every clock read
    assert timer.framework_s == [1.0, 2.0, 1.0, 1.0] and timer.plain_s == [0.5, 1.0, 1.0, 2.0]
    # Once with the warm-up's garbage, what lives then frozen out of later collections; then before every window
    # (and the one the stop leaves untimed).
    assert collections == ["collect", "freeze"] + ["collect"] * 9
    ratios = bench.pair_ratios(timer.framework_s, timer.plain_s)
    assert bench.quadruple_ratios(ratios) == pytest.approx([(0.5 * 0.5) ** 0.5, (1.0 * 2.0) ** 0.5])


def test_an_order_bias_cancels_in_every_two_pairs() -> None:
    """Equal paths, but the second window of a pair always runs 10% slower: each pair's ratio is off by 10%,
    alternately up and down; their geometric means are 1."""
    framework_s, plain_s = [1.0, 1.1, 1.0, 1.1], [1.1, 1.0, 1.1, 1.0]  # F P | P F | F P | P F
    assert bench.pair_ratios(framework_s, plain_s) == pytest.approx([1.1, 1 / 1.1, 1.1, 1 / 1.1])
    assert bench.quadruple_ratios(bench.pair_ratios(framework_s, plain_s)) == pytest.approx([1.0, 1.0])


def test_ratio_interval_against_scipy() -> None:
    """The geometric mean of the quadruple ratios and Student's t interval of their logs, by scipy."""
    framework_s, plain_s = [2.0, 1.0, 4.0, 1.0, 2.0, 1.5], [1.0, 0.9, 4.4, 1.2, 1.5, 1.6]
    ratios = bench.pair_ratios(framework_s, plain_s)
    assert ratios == pytest.approx([0.5, 0.9, 1.1, 1.2, 0.75, 1.6 / 1.5])  # plain's seconds over the framework's
    logs = np.log([(0.5 * 0.9) ** 0.5, (1.1 * 1.2) ** 0.5, (0.75 * 1.6 / 1.5) ** 0.5])
    low, high = scipy.stats.t.interval(0.95, len(logs) - 1, loc=logs.mean(), scale=scipy.stats.sem(logs))

    interval = bench.ratio_interval(framework_s, plain_s)
    assert (interval.ratio, interval.low, interval.high) == pytest.approx(np.exp([logs.mean(), low, high]))
    assert interval.pairs == 6
    assert interval.log_half_width == pytest.approx((high - low) / 2)


def test_overhead_against_scipy() -> None:
    """Framework minus plain milliseconds per step: the mean over quadruples of the two pairs' differences, and
    Student's t interval over them, by scipy."""
    framework_s, plain_s = [2.0, 1.0, 4.0, 1.0, 2.0, 1.5], [1.0, 0.9, 4.4, 1.2, 1.5, 1.6]
    steps = 4  # batches a window
    per_step_ms = (np.array(framework_s) - np.array(plain_s)) * 1000 / steps  # 250, 25, -100, -50, 125, -25
    quadruples = per_step_ms.reshape(-1, 2).mean(1)  # 137.5, -75, 50
    low, high = scipy.stats.ttest_1samp(quadruples, 0).confidence_interval(0.95)

    extra = bench.overhead(framework_s, plain_s, steps)
    assert (extra.ms, extra.low, extra.high) == pytest.approx([quadruples.mean(), low, high])
    # An order bias cancels here too: the second window of a pair always 0.1 s slower, equal paths.
    assert bench.overhead([1.0, 1.1, 1.0, 1.1], [1.1, 1.0, 1.1, 1.0], 1).ms == pytest.approx(0.0)


def test_a_dataset_no_listed_net_takes_is_refused(hydra_conf: None) -> None:
    with pytest.raises(
        UserError, match=r"^no net of bench.nets=\['patch'\] takes the images of bench.datasets=\['mnist'\]$"
    ):
        bench.plan(compose("bench", ["bench.device=cpu", "bench.nets=[patch]", "bench.datasets=[mnist]"]).bench)


@pytest.mark.parametrize(("noise", "pairs"), [(0.0, bench.MIN_PAIRS), (0.2, 40)])
def test_interleave_stops_once_the_ratio_is_precise_enough(noise: float, pairs: int) -> None:
    """Equal windows give an interval of width 0 at the first check allowed (``MIN_PAIRS``); windows 20% apart at
    random never reach ±1%, so the row runs to its cap (``windows``)."""
    generator = torch.Generator().manual_seed(0)
    clock = iter(torch.rand(1000, generator=generator).mul(noise).add(1.0).cumsum(0).tolist())
    timer = bench.Interleave(
        CountingPlainLoop(), warmup=1, windows=40, steps=1, sync=lambda: None, clock=lambda: next(clock),
        ci_half_width=0.01,
    )  # fmt: skip
    trainer = StopFlag()
    with mock.patch("gc.collect"), mock.patch("gc.freeze"):
        while not trainer.should_stop:
            timer.on_train_batch_end(trainer)
    assert len(timer.framework_s) == len(timer.plain_s) == pairs
    interval = bench.ratio_interval(timer.framework_s, timer.plain_s)
    assert (interval.log_half_width <= 0.01) == (noise == 0.0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bench.models=[vae]", "bench.models=['vae'] must list some of: ae, rae, ae_gan, rae_gan"),
        ("bench.datasets=[]", "bench.datasets=[] must list some of: mnist, cifar10"),
        ("bench.precision=16-mixed", "bench.precision='16-mixed' is not one of: 32-true, bf16-mixed"),
        ("bench.windows=1", "bench.windows must be even and at least 4 (pairs go in twos), got 1"),
        ("bench.windows=5", "bench.windows must be even and at least 4 (pairs go in twos), got 5"),
        ("bench.window_images=0", "bench.window_images must be at least 1, got 0"),
        ("bench.ci_half_width=0", "bench.ci_half_width must be between 0 and 1 (0.01: within 1%), got 0"),
        ("bench.ci_half_width=1.5", "bench.ci_half_width must be between 0 and 1 (0.01: within 1%), got 1.5"),
        ("bench.threads=-1", "bench.threads must be 0 (torch's default) or more, got -1"),
        ("bench.batch_sizes=[64,0]", "bench.batch_sizes=[64, 0] must list sizes of at least 1"),
        ("bench.device=tpu", "bench.device='tpu' is not one of: cuda, cpu, null"),
        ("bench.clock=gpu", "bench.clock='gpu' is not one of: wall, process"),
        ("bench.num_images=1000", "bench.num_images=1000 must be a multiple of every batch size [64, 256]"),
    ],
)
def test_bad_settings_are_rejected(hydra_conf: None, override: str, message: str) -> None:
    """Each bad override, on the CPU's defaults (batch sizes 64 and 256)."""
    with pytest.raises(UserError) as err:
        bench.plan(compose("bench", ["bench.device=cpu", override]).bench)
    assert str(err.value) == message


def test_cli_prints_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "out"  # the bench's folder; the forked child's stdout and stderr go beside it
    out.mkdir()
    argv = ["bench.models=[ae,vae]", f"bench.out_dir={out}"]
    result = run_entry_forked("bench", tmp_path / "console", *argv, cwd=Path(CONF_DIR).parent)
    assert result.returncode == 1
    assert result.stderr == "error: bench.models=['ae', 'vae'] must list some of: ae, rae, ae_gan, rae_gan\n"
    assert not list(out.iterdir())  # no CSV, and Hydra writes no .hydra/ or log file
