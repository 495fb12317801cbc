"""``make gpu-check``'s script, ``--quick`` on the CPU and as small as it goes: every section runs and reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_entry_forked
from torchvision.datasets import CIFAR10

from recursive_ae_gan.data.sources import unverified
from recursive_ae_gan.perf import gpu_check


def test_fixture_is_cifar10_in_torchvision_format(tmp_path: Path) -> None:
    gpu_check.write_cifar10(tmp_path, n_train=12, n_test=4)
    # data.verify=false: torchvision's md5 sums are the real files'
    train, test = (unverified(CIFAR10)(str(tmp_path), train=split, download=False) for split in (True, False))
    assert (len(train), len(test)) == (12, 4)
    image = np.asarray(train[0][0])
    assert image.shape == (32, 32, 3) and image.max() > image.min()  # a blob on a dark ground


def test_quick_run_writes_a_report_of_every_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sweep section's command line (``python -m recursive_ae_gan.train --multirun ...``) runs in a child forked
    # from this process, not a fresh interpreter: the same entry point and arguments, its exit status and output.
    commands = []

    def forked_cli(args, quick: bool):
        commands.append(list(args))
        return run_entry_forked("train", tmp_path / f"cli{len(commands)}", *args)

    monkeypatch.setattr(gpu_check, "run_cli", forked_cli)
    argv = ["--quick", "--models", "ae", "--datasets", "cifar10", "--jobs-per-gpu", "1", "--workdir", str(tmp_path)]
    threads = torch.get_num_threads()

    status = gpu_check.main(argv)

    assert torch.get_num_threads() == threads
    report = (tmp_path / "report.md").read_text()
    assert status == 0, report
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {tmp_path / 'report.md'}"
    assert "**all checks passed**" in report
    lines = report.splitlines()
    trained = [line for line in lines if line.startswith("| ae | ")]
    assert [line.split(" | ")[1] for line in trained] == ["defaults", "channels_last"]
    assert all(line.endswith("| ok |") for line in trained)
    bench_rows = [line.split(" | ") for line in lines if line.startswith("| cifar10 | ae | ")]
    assert [row[2:5] for row in bench_rows] == [["report", "0", "8"], ["patch", "0", "8"]]  # the default nets
    for row in bench_rows:  # what the framework adds per step, within its interval
        low, high = map(float, row[10].split(" – "))
        assert low <= float(row[9]) <= high
    assert "`max overhead: " in report and "`min ratio: " in report
    (sweep_row,) = [line for line in lines if line.startswith("| 1 | 1 | ")]  # jobs_per_gpu 1: one job
    assert sweep_row.endswith("| ok |")
    assert "skipped: fewer than two GPUs (--quick)" in report
    for heading in ("Versions", "Training", "Bench", "Profile", "Sweep throughput", "DDP", "Wall time per section"):
        assert f"### {heading}" in report
    assert len(commands) == 1 and commands[0][0] == "--multirun"  # the sweep's: the quick run has no DDP command


def test_ddp_command_composes_the_game_on_two_gpus(tmp_path: Path) -> None:
    """The DDP section needs two GPUs to run; its command must at least compose to what it claims."""
    cfg = gpu_check.compose_train(gpu_check.ddp_overrides(tmp_path, gpu_check.GPU), tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.strategy, cfg.trainer.devices) == ("gpu", "ddp", 2)
    assert (cfg.trainer.precision, cfg.model._target_) == (
        "bf16-mixed",
        "recursive_ae_gan.models.AdversarialAutoencoder",
    )
    assert cfg.model.recursion_depth == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            [],
            "error: torch sees no GPU; --quick runs the checks on the CPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU it would run the whole check"),
        ),
        (["--quick", "--models", "ae,vae"], "error: --models=ae,vae must list some of: ae, rae, ae_gan, rae_gan"),
        (["--quick", "--sections", ""], "error: --sections= must list some of: train, bench, sweep, ddp"),
    ],
)
def test_bad_command_lines_end_in_one_error_line(argv: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main([*argv, "--workdir", str(tmp_path)])
    assert str(exit_.value) == message
    assert not list(tmp_path.iterdir())  # nothing written before the command line is checked
