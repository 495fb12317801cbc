"""report: the tables and plots of a real (tiny) multirun sweep, and statistics over seeds on runs whose
metrics the tests write (checked against numpy and scipy.stats), grouping and comparisons with a baseline."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import ok, run_cli_forked
from omegaconf import OmegaConf
from scipy import stats as sp

from recursive_ae_gan.analysis.plots import group_loss_curves
from recursive_ae_gan.analysis.report import main, write_report
from recursive_ae_gan.analysis.runs import find_runs, group_runs, loss_curves, step_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """``-m model=ae,rae`` for 2 epochs through the real CLI (forked): jobs ``0`` (AE) and ``1`` (RAE, depth 2).

    Two epochs are too short not to look collapsed, and a collapsed job fails the sweep: collapse_threshold=0."""
    out = tmp_path_factory.mktemp("report")
    overrides = ["model=ae,rae", "trainer.max_epochs=2", "collapse_threshold=0", f"hydra.sweep.dir={out / 'sweep'}"]
    ok(run_cli_forked(data_root, out, *overrides, "-m"))
    return out / "sweep"


def copy_run(run: Path, dest: Path, metrics: dict | None = None, experiment: str | None = None) -> Path:
    """A run directory with ``run``'s config, and the given metrics.json and experiment choice."""
    shutil.copytree(run / ".hydra", dest / ".hydra")
    if metrics is not None:
        (dest / "metrics.json").write_text(json.dumps(metrics))
    if experiment is not None:
        hydra = OmegaConf.load(dest / ".hydra" / "hydra.yaml")
        hydra.hydra.runtime.choices.experiment = experiment
        OmegaConf.save(hydra, dest / ".hydra" / "hydra.yaml")
    return dest


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_has_one_row_per_run_and_the_plots(sweep: Path) -> None:
    write_report(sweep)
    rows = read_csv(sweep / "report_runs.csv")
    assert [(r["run"], r["model"], r["depth"], r["dataset"]) for r in rows] == [
        ("0", "ae", "0", "mnist"),
        ("1", "rae", "2", "mnist"),
    ]
    for row in rows:
        metrics = json.loads((sweep / row["run"] / "metrics.json").read_text())
        depth = int(row["depth"])
        assert (row["train"], row["val"], row["test"], row["epochs"]) == ("64", "16", "32", "2")
        assert (row["status"], row["score_name"]) == (metrics["status"], "test/step_0/mse")
        assert float(row["score"]) == metrics["score"]
        # The course report measured the MNIST AE (test MSE 0.014), not the MNIST RAE.
        assert row["reported"] == ("0.014" if row["model"] == "ae" else "")
        for name in ("mse", "bce", "psnr", "ssim"):
            assert float(row[f"step0_{name}"]) == metrics[f"test/step_0/{name}"]
            assert float(row[f"last_{name}"]) == metrics[f"test/step_{depth}/{name}"]
    # AE and RAE are two groups of one run: each keeps its run's values, with no spread or interval.
    groups = read_csv(sweep / "report.csv")
    assert [(g["group"], g["runs"], g["n"], g["status"]) for g in groups] == [
        ("model=ae", "0", "1", "ok"),
        ("model=rae", "1", "1", "ok"),
    ]
    for group, row in zip(groups, rows, strict=True):
        for name in ("score", "step0_mse", "step0_bce", "step0_psnr", "step0_ssim", "last_mse", "last_ssim"):
            assert group[name] == row[name] and group[f"{name}_std"] == group[f"{name}_low"] == ""
        assert all(group[key] == row[key] for key in ("dataset", "model", "depth", "train", "epochs", "reported"))

    markdown = (sweep / "report.md").read_text()
    assert "| run | experiment | dataset | model |" in markdown and "| 1 |  | mnist | rae | 2 |" in markdown
    assert "0.553" in markdown and "0.014" in markdown  # the course report's figures
    for plot in ("loss_curves.png", "test_steps.png"):
        assert f"]({plot})" in markdown
        data = (sweep / plot).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000


def test_loss_curves_come_from_tensorboard_per_epoch(sweep: Path) -> None:
    for run in find_runs(sweep)[0]:
        curves = loss_curves(run)
        assert set(curves) == {"train", "val"}
        for epochs, losses in curves.values():
            assert epochs == [0, 1] and all(0 < loss < 10 for loss in losses)


def test_step_curve_prefers_eval_jsons_deeper_steps(sweep: Path, tmp_path: Path) -> None:
    metrics = json.loads((sweep / "1" / "metrics.json").read_text())
    run = copy_run(sweep / "1", tmp_path / "run", metrics)
    (run_info,), _ = find_runs(run)
    assert step_curve(run_info) == ("mse", [0, 1, 2], [metrics[f"test/step_{i}/mse"] for i in range(3)])

    deeper = {"max_depth": 4, "score_name": "test/step_0/mse", **{f"test/step_{i}/mse": 1.0 + i for i in range(5)}}
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "eval.json").write_text(json.dumps(deeper))
    (run_info,), _ = find_runs(run)
    assert step_curve(run_info) == ("mse", [0, 1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0, 5.0])


def test_report_marks_unfinished_runs_and_reported_figures(sweep: Path, tmp_path: Path) -> None:
    copy_run(sweep / "0", tmp_path / "a_missing")
    copy_run(sweep / "0", tmp_path / "b_failed", {"status": "failed", "error": "boom"})
    ok = json.loads((sweep / "0" / "metrics.json").read_text())
    copy_run(sweep / "0", tmp_path / "nested" / "c_done", ok, experiment="mnist_ae")

    report = write_report(tmp_path)
    rows = report.runs
    assert [(r["run"], r["status"]) for r in rows] == [
        ("a_missing", "missing"),
        ("b_failed", "failed"),
        ("nested/c_done", ok["status"]),
    ]
    assert rows[0]["score"] is None and rows[0]["last_mse"] is None
    assert (rows[2]["experiment"], rows[2]["score"]) == ("mnist_ae", ok["score"])
    # One setting: one group, whose statistics are its one ok run's; the others are counted, not averaged.
    (group,) = report.groups
    assert (group["status"], group["n"], group["score"], group["score_std"]) == (
        "1 missing, 1 failed, 1 ok",
        1,
        ok["score"],
        None,
    )
    # No run has TensorBoard events: no loss plot, and report.md does not link one.
    assert not (tmp_path / "loss_curves.png").exists()
    assert "loss_curves.png" not in (tmp_path / "report.md").read_text()
    assert (tmp_path / "test_steps.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("dataset", "short"),
    [
        ("torchvision.datasets.CIFAR10", "cifar10"),  # the package's configs name torchvision classes
        ("torchvision.datasets.FashionMNIST", "fashionmnist"),  # any other class: its name, lowercased
        ("folder", "folder"),
        ("mnist", "mnist"),  # runs from before the data package named the dataset
    ],
)
def test_dataset_column_is_the_short_name(sweep: Path, tmp_path: Path, dataset: str, short: str) -> None:
    ok = json.loads((sweep / "0" / "metrics.json").read_text())
    run = copy_run(sweep / "0", tmp_path / "run", ok)
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    config.data.dataset = dataset
    OmegaConf.save(config, run / ".hydra" / "config.yaml")
    (row,) = write_report(tmp_path).runs
    assert row["dataset"] == short
    assert row["reported"] == (0.014 if short == "mnist" else None)  # the MNIST AE's figure, looked up by name


@pytest.mark.parametrize("make, message", [(False, "is not a directory"), (True, "no runs under")])
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, make: bool, message: str) -> None:
    target = tmp_path / "empty"
    if make:
        target.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(target)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_report_leaves_out_the_runs_whose_files_are_damaged_and_names_them(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ok = json.loads((sweep / "0" / "metrics.json").read_text())
    for name in ("a_whole", "b_metrics", "c_config", "d_overrides", "e_eval"):
        copy_run(sweep / "0", tmp_path / name, ok)
    for run, file in (("b_metrics", "metrics.json"), ("c_config", ".hydra/config.yaml")):  # cut in half
        text = (tmp_path / run / file).read_text()
        (tmp_path / run / file).write_text(text[: len(text) // 2])
    (tmp_path / "d_overrides" / ".hydra" / "overrides.yaml").write_bytes(bytes(range(128, 256)))  # not text
    (tmp_path / "e_eval" / "checkpoints").mkdir()
    (tmp_path / "e_eval" / "checkpoints" / "eval.json").write_text("")  # emptied

    main([str(tmp_path)])
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 4
    cut = [("b_metrics", "metrics.json"), ("c_config", ".hydra/config.yaml")]
    for warning, (run, file) in zip(warnings[:2], cut, strict=True):
        assert warning.startswith(f"warning: left out run {run}: {tmp_path / run / file} is damaged (")
        assert warning.endswith("; cut short?)")
    assert warnings[2:] == [
        f"warning: left out run d_overrides: {tmp_path}/d_overrides/.hydra/overrides.yaml is damaged (not text: byte 0 "
        "is 0x80)",
        f"warning: left out run e_eval: {tmp_path}/e_eval/checkpoints/eval.json is damaged (empty; cut short?)",
    ]
    assert "wrote" in out and [row["run"] for row in read_csv(tmp_path / "report_runs.csv")] == ["a_whole"]
    markdown = (tmp_path / "report.md").read_text()
    assert "## Left out" in markdown and all(line.removeprefix("warning: ") in markdown for line in warnings)


def test_tags_are_shown_and_select_the_runs(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ok = json.loads((sweep / "0" / "metrics.json").read_text())
    for name, tags in (("a", ["baseline"]), ("b", ["baseline", "gan"]), ("c", [])):
        run = copy_run(sweep / "0", tmp_path / name, ok)
        config = OmegaConf.load(run / ".hydra" / "config.yaml")
        config.tags = tags
        OmegaConf.save(config, run / ".hydra" / "config.yaml")
    rows = write_report(tmp_path).runs
    assert [(r["run"], r["tags"]) for r in rows] == [("a", "baseline"), ("b", "baseline,gan"), ("c", None)]
    assert [r["run"] for r in write_report(tmp_path, ["baseline"]).runs] == ["a", "b"]
    assert [r["run"] for r in write_report(tmp_path, ["baseline", "gan"]).runs] == ["b"]
    with open(tmp_path / "report.csv", newline="") as f:
        assert [r["tags"] for r in csv.DictReader(f)] == ["baseline,gan"]
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--tag", "nope"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"error: no run under {tmp_path} is tagged nope (tags found: baseline, gan)\n"


def fake_run(
    template: Path, dest: Path, seed: int, score: float | None, status: str = "ok", changes: dict | None = None
) -> Path:
    """A run with ``template``'s config, ``seed`` and ``changes`` (dotted keys, also added to its overrides, as
    the command line does), and a metrics.json whose test metrics at every step derive from ``score``."""
    run = copy_run(template, dest)
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    overrides = [o for o in OmegaConf.load(run / ".hydra" / "overrides.yaml") if not o.startswith("seed=")]
    for key, value in {"seed": seed, **(changes or {})}.items():
        OmegaConf.update(config, key, value)
        overrides = [o for o in overrides if not o.startswith(f"{key}=")] + [f"{key}={value}"]
    OmegaConf.save(config, run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
    metrics: dict = {"status": status}
    if score is not None:
        metrics |= {"score_name": "test/step_0/mse", "score": score}
        for step in range(config.model.recursion_depth + 1):
            mse = score * (1 + step)
            values = {"mse": mse, "bce": 0.2 + mse, "psnr": -10 * np.log10(mse), "ssim": 1 - 10 * mse}
            metrics |= {f"test/step_{step}/{name}": value for name, value in values.items()}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def t_interval(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, std and 95% t interval, independently: numpy and scipy.stats."""
    a = np.asarray(values)
    low, high = sp.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=sp.sem(a))
    return a.mean(), a.std(ddof=1), low, high


AE_SCORES = {0: 0.0130, 1: 0.0125, 2: 0.0141, 3: 0.0133, 4: 0.0128}  # seed: test MSE
RAE_SCORES = {3: 0.0150, 1: 0.0139, 0: 0.0142, 2: 0.0160, 7: 0.0170}  # shuffled; 4 and 7 are one side's only


@pytest.fixture
def seeds_sweep(sweep: Path, tmp_path: Path) -> Path:
    """AE over seeds 0-4 plus a failed seed 5, RAE over 3, 1, 0, 2, 7 plus a collapsed seed 6."""
    for i, (seed, score) in enumerate(AE_SCORES.items()):
        fake_run(sweep / "0", tmp_path / f"{i}", seed, score)
    fake_run(sweep / "0", tmp_path / "5", 5, None, status="failed")
    for i, (seed, score) in enumerate(RAE_SCORES.items()):
        fake_run(sweep / "1", tmp_path / f"{6 + i}", seed, score)
    fake_run(sweep / "1", tmp_path / "11", 6, 0.5, status="collapsed")
    return tmp_path


def test_groups_summarize_over_seeds_and_compare_paired_by_seed(
    seeds_sweep: Path, capsys: pytest.CaptureFixture
) -> None:
    main([str(seeds_sweep)])
    out = capsys.readouterr().out.splitlines()
    ae, rae = read_csv(seeds_sweep / "report.csv")
    assert (ae["group"], ae["status"], ae["n"], ae["seeds"]) == ("model=ae", "5 ok, 1 failed", "5", "0 1 2 3 4")
    assert (rae["group"], rae["status"], rae["n"]) == ("model=rae", "5 ok, 1 collapsed", "5")
    for group, scores in ((ae, AE_SCORES), (rae, RAE_SCORES)):
        depth = int(group["depth"])
        for metric, values in (
            ("score", list(scores.values())),
            ("step0_psnr", [-10 * np.log10(s) for s in scores.values()]),
            ("last_ssim", [1 - 10 * s * (1 + depth) for s in scores.values()]),
        ):
            found = [float(group[f"{metric}{suffix}"]) for suffix in ("", "_std", "_low", "_high")]
            assert found == pytest.approx(t_interval(values), rel=1e-9)

    # Paired over seeds 0-3 (RAE's 7 and AE's 4 have no partner), matched by seed whatever the run order.
    shared = [0, 1, 2, 3]
    expected = sp.ttest_rel([RAE_SCORES[s] for s in shared], [AE_SCORES[s] for s in shared]).confidence_interval(0.95)
    difference = np.mean([RAE_SCORES[s] - AE_SCORES[s] for s in shared])
    (row,) = read_csv(seeds_sweep / "report_comparisons.csv")
    columns = ("variant", "baseline", "metric", "paired_seeds", "variant_n", "baseline_n", "verdict")
    assert [row[c] for c in columns] == ["RAE", "AE", "mse", "4", "5", "5", "worse"]
    assert [float(row[k]) for k in ("difference", "low", "high")] == pytest.approx(
        [difference, expected.low, expected.high]
    )
    line = (
        f"RAE vs AE on MNIST: MSE {difference:+.5f} [{expected.low:+.5f}, {expected.high:+.5f}], worse, 4 paired seeds"
    )
    assert line in out and f"- {line}" in (seeds_sweep / "report.md").read_text()
    assert out[0].startswith("grouping: runs whose configs differ only in seed, data.seed, data.split_seed (the seeds)")
    assert "| model=ae | mnist | ae | 5 ok, 1 failed |" in out[3]  # the printed table, after its header lines
    assert (seeds_sweep / "test_steps.png").read_bytes()[:8] == PNG_MAGIC
    assert len(read_csv(seeds_sweep / "report_runs.csv")) == 12


def test_variants_without_a_shared_seed_are_compared_unpaired(sweep: Path, tmp_path: Path) -> None:
    ae, rae = [0.0130, 0.0125, 0.0141, 0.0133], [0.0150, 0.0139, 0.0142]
    for i, score in enumerate(ae):
        fake_run(sweep / "0", tmp_path / f"ae{i}", i, score)
    for i, score in enumerate(rae):
        fake_run(sweep / "1", tmp_path / f"rae{i}", 10 + i, score)
    (comparison,) = write_report(tmp_path).comparisons
    expected = sp.ttest_ind(rae, ae, equal_var=False).confidence_interval(0.95)
    d = comparison.difference
    assert not d.paired and (d.mean, d.low, d.high) == pytest.approx(
        [np.mean(rae) - np.mean(ae), expected.low, expected.high]
    )
    assert comparison.line().endswith(f", {comparison.verdict}, unpaired (Welch, no shared seed), 3 and 4 runs")


@pytest.mark.parametrize(
    ("key", "value", "one_group"),
    [
        ("seed", 3, True),
        ("data.seed", 7, True),  # the seeds
        ("data.split_seed", 1, True),
        ("paths.log_dir", "/elsewhere", True),  # where it writes, not what it trains
        ("tags", ["x"], True),
        ("model.lr", 0.001, False),
        ("trainer.max_epochs", 3, False),
        ("data.in_memory", False, False),  # streaming need not train the same: conservative
    ],
)
def test_grouping_ignores_the_seeds_and_nothing_that_trains(
    sweep: Path, tmp_path: Path, key: str, value: object, one_group: bool
) -> None:
    fake_run(sweep / "0", tmp_path / "a", 0, 0.013)
    fake_run(sweep / "0", tmp_path / "b", 0, 0.014, changes={key: value})
    groups = group_runs(find_runs(tmp_path)[0])
    assert len(groups) == (1 if one_group else 2)
    if not one_group:
        assert groups[1].label == f"{key}={value}"  # the override that makes it differ


def test_each_variant_meets_the_baseline_with_its_other_settings(sweep: Path, tmp_path: Path) -> None:
    """``model=ae,rae model.lr=0.001,0.01``: RAE at lr 0.01 against AE at lr 0.01, not at 0.001."""
    for model, template, offset in (("ae", "0", 0.0), ("rae", "1", 0.002)):
        for lr, base in ((0.001, 0.013), (0.01, 0.020)):
            for seed in range(3):
                score = base + offset + 0.0003 * seed
                fake_run(sweep / template, tmp_path / f"{model}_{lr}_{seed}", seed, score, changes={"model.lr": lr})
    fake_run(sweep / "1", tmp_path / "rae_0.1", 0, 0.05, changes={"model.lr": 0.1})  # no AE at lr 0.1
    report = write_report(tmp_path)
    assert report.notes == [
        "RAE (model.lr=0.1) on MNIST: not compared, 2 baseline groups and none has its other settings"
    ]
    assert {(c.variant, c.baseline) for c in report.comparisons} == {
        ("RAE (model.lr=0.001)", "AE (model.lr=0.001)"),
        ("RAE (model.lr=0.01)", "AE (model.lr=0.01)"),
    }
    assert all(c.difference.mean == pytest.approx(0.002) and c.difference.n == 3 for c in report.comparisons)


def test_baseline_is_selectable_and_a_missing_one_is_one_line(seeds_sweep: Path, capsys: pytest.CaptureFixture) -> None:
    main([str(seeds_sweep), "--baseline", "model=rae"])
    assert "AE vs RAE on MNIST: MSE" in capsys.readouterr().out
    (by_key,) = write_report(seeds_sweep, baseline="model.recursion_depth=2").comparisons  # a config key
    assert (by_key.variant, by_key.baseline, by_key.difference.n) == ("AE", "RAE", 4)
    report = write_report(seeds_sweep, baseline="model=ae_gan")
    assert report.comparisons == [] and report.notes == [
        "no baseline (model=ae_gan) on MNIST: its 2 group(s) are not compared"
    ]
    assert read_csv(seeds_sweep / "report_comparisons.csv") == []  # its header only
    with pytest.raises(SystemExit):
        main([str(seeds_sweep), "--baseline", "model"])
    error = "error: --baseline model: expected KEY=VALUE, a Hydra choice (model=ae) or a config key\n"
    assert capsys.readouterr().err == error


def test_a_variant_without_an_ok_run_is_one_line(sweep: Path, tmp_path: Path) -> None:
    fake_run(sweep / "0", tmp_path / "ae", 0, 0.013)
    fake_run(sweep / "1", tmp_path / "rae", 0, None, status="failed")
    report = write_report(tmp_path)
    assert report.comparisons == [] and report.notes == ["RAE vs AE on MNIST: not compared, RAE has no ok run"]


def test_loss_curves_are_a_group_mean_with_a_band(sweep: Path, tmp_path: Path) -> None:
    for seed in (0, 1):  # two seeds of one setting, with the real run's TensorBoard files
        shutil.copytree(sweep / "0", tmp_path / f"{seed}")
        config = OmegaConf.load(tmp_path / f"{seed}" / ".hydra" / "config.yaml")
        config.seed = seed
        OmegaConf.save(config, tmp_path / f"{seed}" / ".hydra" / "config.yaml")
    (group,) = group_runs(find_runs(tmp_path)[0])
    (epochs, losses) = loss_curves(group.runs[0])["val"]
    assert group_loss_curves(group)["val"] == {e: [loss, loss] for e, loss in zip(epochs, losses, strict=True)}
    write_report(tmp_path)
    assert (tmp_path / "loss_curves.png").read_bytes()[:8] == PNG_MAGIC
    assert "band is the 95% t interval" in (tmp_path / "report.md").read_text()


AE_JUDGE = {0: 0.97, 1: 0.95, 2: 0.99, 3: 0.96}  # seed: a fresh judge's accuracy at step 0
RAE_JUDGE = {0: 0.91, 1: 0.91, 2: 0.93, 3: 0.92}  # and at every step s, minus 0.01 * s


def judged(run: Path, accuracy: float, depth: int, in_eval_json: bool = False) -> None:
    """Add a realism test's verdicts at steps 0..depth to the run's metrics.json, or to an eval.json beside its
    checkpoints (as ``evaluate`` writes it)."""
    verdicts = {}
    for step in range(depth + 1):
        acc = accuracy - 0.01 * step
        verdicts |= {f"test/step_{step}/judge_acc": acc, f"test/step_{step}/judge_auc": acc + 0.02}
        verdicts |= {f"test/step_{step}/judge_acc_low": acc - 0.03, f"test/step_{step}/judge_acc_high": acc + 0.02}
    if in_eval_json:
        (run / "checkpoints").mkdir(exist_ok=True)
        (run / "checkpoints" / "eval.json").write_text(json.dumps({"max_depth": depth, **verdicts}))
        return
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(metrics | verdicts))


def test_realism_over_seeds_and_its_paired_difference_per_step(sweep: Path, tmp_path: Path) -> None:
    for seed, accuracy in AE_JUDGE.items():
        judged(fake_run(sweep / "0", tmp_path / f"ae{seed}", seed, 0.013), accuracy, 0, in_eval_json=seed == 2)
    for seed, accuracy in RAE_JUDGE.items():
        judged(fake_run(sweep / "1", tmp_path / f"rae{seed}", seed, 0.015), accuracy, 2)
    results = write_report(tmp_path)

    rows = {(r["group"], int(r["step"])): r for r in read_csv(tmp_path / "report_realism.csv")}
    assert set(rows) == {("model=ae", 0), ("model=rae", 0), ("model=rae", 1), ("model=rae", 2)}
    for (group, step), row in rows.items():
        accuracies = [a - 0.01 * step for a in (AE_JUDGE if group == "model=ae" else RAE_JUDGE).values()]
        found = [float(row[k]) for k in ("judge_acc", "judge_acc_std", "judge_acc_low", "judge_acc_high")]
        assert found == pytest.approx(t_interval(accuracies), rel=1e-9)
        assert float(row["judge_auc"]) == pytest.approx(np.mean(accuracies) + 0.02)
        assert (row["n"], row["distortion_metric"]) == ("4", "mse")
        assert float(row["distortion"]) == pytest.approx((0.013 if group == "model=ae" else 0.015) * (1 + step))

    (comparison,) = results.realism_comparisons  # only step 0 was judged on both
    seeds = sorted(AE_JUDGE)
    expected = sp.ttest_rel([RAE_JUDGE[s] for s in seeds], [AE_JUDGE[s] for s in seeds]).confidence_interval(0.95)
    assert (comparison.metric, comparison.difference.n, comparison.verdict) == ("judge accuracy at step 0", 4, "better")
    assert (comparison.difference.low, comparison.difference.high) == pytest.approx((expected.low, expected.high))
    report = (tmp_path / "report.md").read_text()
    assert "## Realism: can a fresh judge tell?" in report and f"- {comparison.line()}" in report
    assert (tmp_path / "perception_distortion.png").read_bytes()[:8] == PNG_MAGIC
