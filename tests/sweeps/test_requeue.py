"""Time limits and preemption under ``hydra/launcher=slurm`` (``sweeps/requeue.py``): a job sent
SLURM's requeue signal mid-epoch is requeued, stops after its batch with a last.ckpt, and the requeued job
continues from it in the same job directory to an uninterrupted run's weights.

No SLURM here: ``sbatch``, ``srun``, ``scontrol`` and ``sacct`` on PATH are small scripts that run the job as
SLURM would (its variables set, the script run again after ``scontrol requeue``), so that the real launcher,
submitit's job runner and its signal handler, Lightning and ``run.continuation`` do all the rest.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from helpers import run_cli_forked

from recursive_ae_gan.run.train import train

JOB = "42"

FAKE_SLURM = {
    "sbatch": f"""#!/bin/bash
# sbatch SCRIPT: job {JOB} runs SCRIPT in the background, and again after each `scontrol requeue`, as SLURM does.
bin=$(dirname "$0")
export SLURM_JOB_ID={JOB} SLURM_JOB_NAME=train SLURM_NTASKS=1 SLURM_JOB_NUM_NODES=1 SLURM_NODEID=0 \\
    SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODELIST=localhost
cp "$1" "$bin/submitted.sh"
(while :; do bash "$1"; [ -e "$bin/requeued" ] || break; rm "$bin/requeued"; done; touch "$bin/ended") \\
    </dev/null >/dev/null 2>&1 &
echo "Submitted batch job {JOB}"
""",
    "srun": """#!/bin/bash
# srun --unbuffered --output OUT --error ERR COMMAND...: COMMAND (one task), its streams appended to OUT and ERR.
while [[ $1 == --* ]]; do
  case $1 in --output) out=$2; shift;; --error) err=$2; shift;; esac
  shift
done
out=${out//%j/$SLURM_JOB_ID}; err=${err//%j/$SLURM_JOB_ID}
"$@" >>"${out//%t/0}" 2>>"${err//%t/0}"
echo $? >>"$(dirname "$0")/exits"
""",
    "scontrol": """#!/bin/bash
echo "$@" >>"$(dirname "$0")/scontrol.args"; touch "$(dirname "$0")/requeued"
""",
    "sacct": "#!/bin/bash\n",  # no job known: submitit waits for the result file
}


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def fake_slurm(bin_dir: Path) -> None:
    bin_dir.mkdir()
    for name, text in FAKE_SLURM.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def test_usr2_mid_epoch_requeues_the_job_which_continues_to_an_uninterrupted_runs_weights(
    data_root: Path, compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """USR2 at the end of epoch 1's batch 1 (a timeout for submitit: the job's limit is 1 minute), requeued
    with max_num_timeout=3 (2 left): the job stops after that batch, and the requeued one trains batches 2, 3."""
    bin_dir = tmp_path / "bin"
    fake_slurm(bin_dir)
    run = ["trainer.max_epochs=2", "collapse_threshold=0"]
    send = ["_target_=tests.recorders.SignalAt", "signum=SIGUSR2", "epoch=1", "batch=1", f"marker={tmp_path / 'sent'}"]
    seen = tmp_path / "seen" / "rank0.json"  # the batches that the last attempt trained
    callbacks = [f"+callbacks.signal.{o}" for o in send] + [
        "+callbacks.record._target_=tests.recorders.RecordBatches",
        f"+callbacks.record.path={seen.parent}",
    ]
    with monkeypatch.context() as patch:  # the launcher forked from this process; the job's attempts start afresh
        patch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        done = run_cli_forked(data_root, tmp_path, "hydra.mode=MULTIRUN", "hydra/launcher=slurm",
                              "hydra.launcher.timeout_min=1", *run, *callbacks)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 job: 1 ok, 0 failed" in done.stdout

    submitted = (bin_dir / "submitted.sh").read_text()
    assert "#SBATCH --signal=USR2@120" in submitted and "#SBATCH --requeue" in submitted
    assert (bin_dir / "scontrol.args").read_text() == f"requeue {JOB}\n"
    for _ in range(300):  # the job's last attempt still exits after writing the result that the launcher waited for
        if (bin_dir / "ended").exists():
            break
        time.sleep(0.1)
    assert (bin_dir / "exits").read_text() == "0\n0\n"  # two attempts, each ended by itself
    (job,) = tmp_path.glob("multiruns/*/0")  # the sweep directory is named by the time: the requeued job's too
    logs = job.parent / ".submitit" / JOB
    log = (logs / f"{JOB}_0_log.out").read_text()
    assert f"Requeued job {JOB} (2 remaining timeouts)" in log
    assert "requeued: training stops at the end of this batch" in log
    last = job / "checkpoints" / "last.ckpt"
    assert f"SIGTERMException was raised with message: , saved checkpoint to {last}" in " ".join(
        (logs / f"{JOB}_0_log.err").read_text().split()
    )  # Lightning's stop: the first attempt wrote last.ckpt on its way out
    assert f"{job} holds this run, unfinished: resuming from {last}" in log  # the requeued attempt
    assert [(epoch, batch) for epoch, batch, _ in json.loads(seen.read_text())] == [(1, 2), (1, 3)]

    straight = compose_cfg(*run)
    assert json.loads((job / "metrics.json").read_text()) == train(straight)
    expected, requeued = weights(tmp_path / "checkpoints" / "last.ckpt"), weights(last)
    assert expected.keys() == requeued.keys()
    for name in expected:
        assert torch.equal(expected[name], requeued[name]), name
