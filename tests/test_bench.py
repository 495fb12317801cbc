"""The benchmark: a quick run end to end, the plain loop's fidelity, the window timer and bad settings.

No assertion is about speed: the CPU is shared and the numbers belong in docs/benchmarks.md.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from recursive_ae_gan import bench
from recursive_ae_gan.errors import UserError

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@pytest.fixture
def hydra_conf() -> Iterator[None]:
    """Hydra initialised on ``conf/``: ``benchmark`` composes ``train.yaml`` for every row."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        yield


def test_quick_run_prints_every_row_and_writes_the_csv(
    hydra_conf: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    threads = torch.get_num_threads()
    # One thread: the smoke run must not fight other processes for the cores.
    cfg = compose("bench", ["bench.quick=true", "bench.device=cpu", "bench.threads=1", f"bench.out_dir={tmp_path}"])
    rows = bench.benchmark(cfg)

    assert torch.get_num_threads() == threads  # the caller's setting is restored
    expected = [(d, m) for d in ("mnist", "cifar10") for m in ("ae", "rae", "ae_gan", "rae_gan")]
    assert [(r.dataset, r.model) for r in rows] == expected
    assert [r.depth for r in rows] == [0, 2, 0, 2] * 2
    assert all(r.batch == 8 and r.framework_img_s > 0 and r.plain_img_s > 0 for r in rows)
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"min ratio: {min(r.ratio for r in rows):.3f}"
    assert sum(line.split()[:2] == [d, m] for line in out for d, m in expected) == len(expected)

    (path,) = tmp_path.glob("*.csv")
    assert out[-2] == f"wrote {path}"
    with path.open() as f:
        written = list(csv.DictReader(f))
    assert [(w["dataset"], w["model"]) for w in written] == expected
    for w, row in zip(written, rows, strict=True):
        assert (w["device"], w["precision"], w["threads"], w["clock"]) == ("cpu", "32-true", "1", "wall")
        assert float(w["ratio"]) == pytest.approx(row.framework_img_s / row.plain_img_s, rel=1e-3)
        assert float(w["framework_peak_mib"]) > 0 and float(w["plain_peak_mib"]) > 0


@pytest.mark.parametrize(("dataset", "model"), [("mnist", "rae_gan"), ("cifar10", "ae")])
def test_plain_loop_trains_exactly_like_the_framework(hydra_conf: None, dataset: str, model: str) -> None:
    """Same weights after the same batches: the ratio compares the same work."""
    s = bench.settings(compose("bench", ["bench.quick=true", "bench.device=cpu"]).bench)
    cfg = bench.train_config(s, dataset, model, batch_size=8)
    torch.manual_seed(cfg.seed)
    initial = instantiate(cfg.model, image_shape=list(bench.SHAPES[dataset])).state_dict()
    runs = {name: bench.Windows(warmup=1, number=2, steps=1, sync=lambda: None) for name in ("framework", "plain")}

    framework = bench.framework_run(cfg, runs["framework"])
    plain = bench.plain_run(cfg, runs["plain"])

    for windows in runs.values():  # both stopped right after the last window
        assert windows.batches == 3 and len(windows.stamps) == 3
    assert framework.keys() == plain.keys()
    torch.testing.assert_close(plain, framework)
    trained = [k for k in initial if not torch.equal(initial[k], framework[k])]
    assert any(k.startswith("net.") for k in trained)
    assert any(k.startswith("discriminator.") for k in trained) == model.endswith("gan")


def test_windows_time_the_median_window() -> None:
    times, syncs = iter([0.0, 1.0, 1.5, 3.5]), []  # windows of 1, 0.5 and 2 seconds
    windows = bench.Windows(warmup=2, number=3, steps=2, sync=lambda: syncs.append(1), clock=lambda: next(times))
    done = [windows.tick() for _ in range(8)]
    assert done == [False] * 7 + [True]
    assert windows.stamps == [0.0, 1.0, 1.5, 3.5] and len(syncs) == 4  # a sync before every stamp
    assert windows.images_per_second(batch_size=10) == pytest.approx(20 / 1.0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bench.models=[vae]", "bench.models=['vae'] must list some of: ae, rae, ae_gan, rae_gan"),
        ("bench.datasets=[]", "bench.datasets=[] must list some of: mnist, cifar10"),
        ("bench.precision=16-mixed", "bench.precision='16-mixed' is not one of: 32-true, bf16-mixed"),
        ("bench.windows=0", "bench.windows must be at least 1, got 0"),
        ("bench.batch_sizes=[64,0]", "bench.batch_sizes=[64, 0] must list sizes of at least 1"),
        ("bench.device=tpu", "bench.device='tpu' is not one of: cuda, cpu, null"),
        ("bench.clock=gpu", "bench.clock='gpu' is not one of: wall, process"),
        ("bench.num_images=1000", "bench.num_images=1000 must be a multiple of every batch size [64, 256]"),
    ],
)
def test_bad_settings_are_rejected(hydra_conf: None, override: str, message: str) -> None:
    """Each bad override, on the CPU's defaults (batch sizes 64 and 256)."""
    with pytest.raises(UserError) as err:
        bench.settings(compose("bench", ["bench.device=cpu", override]).bench)
    assert str(err.value) == message


def test_cli_prints_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "recursive_ae_gan.bench", "bench.models=[ae,vae]", f"bench.out_dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=Path(CONF_DIR).parent,
    )
    assert result.returncode == 1
    assert result.stderr == "error: bench.models=['ae', 'vae'] must list some of: ae, rae, ae_gan, rae_gan\n"
    assert not list(tmp_path.iterdir())  # no CSV, and Hydra writes no .hydra/ or log file
