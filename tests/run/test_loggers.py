"""Loggers beyond TensorBoard (MLflow, W&B, several at once), tags, the config tree, TensorBoard's step
dashboard, and runs named by what they are: each read back with the logger's own reader."""

from __future__ import annotations

import importlib.util
import io
import json
import struct
import sys
from pathlib import Path

import fsspec.implementations.local
import pytest
from helpers import CONF_DIR, RefusingFile, fixture_overrides, run_cli_forked
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata

from recursive_ae_gan.core.console import write_refused
from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.run.config import check
from recursive_ae_gan.run.loggers import MAX_NAME, CSVFiles, run_name, safe_name
from recursive_ae_gan.run.train import train

# TensorBoard always; MLflow and W&B when their extras are installed (CI installs them: the Makefile).
LOGGERS = ["tensorboard", *(name for name in ("mlflow", "wandb") if importlib.util.find_spec(name))]
TAGS = ["smoke", "loggers"]


@pytest.fixture(scope="module")
def logged_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One short RAE+GAN run (depth 1, the game from the first batch, 2 epochs) logging to every installed logger."""
    out = tmp_path_factory.mktemp("logged")
    overrides = [
        *fixture_overrides(data_root, out),
        f"logger=[{','.join(LOGGERS)}]",
        "model=rae_gan",
        "model.recursion_depth=1",
        "model.warmup_epochs=0",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        f"tags=[{','.join(TAGS)}]",
        "collapse_threshold=0",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_CACHE_DIR", str(out / "wandb_cache"))  # W&B's own logs: here, not under ~/.cache
        return out, train(cfg)


def test_mlflow_store_holds_the_params_metrics_tags_and_images(logged_run) -> None:
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[mlflow]'")
    from mlflow.tracking import MlflowClient

    out, result = logged_run
    client = MlflowClient(f"sqlite:///{out}/mlflow/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("recursive_ae_gan").experiment_id])
    assert run.info.status == "FINISHED"
    params = run.data.params
    settings = ("recursion_depth", "balance", "lr", "d_lr", "tags")
    assert [params[key] for key in settings] == ["1", "target", "0.005", "0.001", "smoke,loggers"]
    metrics = run.data.metrics  # each metric's last value
    assert metrics["score"] == pytest.approx(result["score"])
    for key in ("test/step_1/bce", "test/step_0/fool_rate", "val/loss", "val/step_1/fool_rate"):
        assert metrics[key] == pytest.approx(result[key]), key
    assert {"train/step_1/adv_weight", "train/step_1/fool_rate", "train/loss_step"} <= set(metrics)
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2  # one per epoch
    assert {run.data.tags[tag] for tag in TAGS} == {"true"}
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert sum(p.startswith("images/val~reconstructions") and p.endswith(".png") for p in images) == 2


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` file: W&B's LevelDB-style log (a 7-byte header, then 32 KiB blocks
    of chunks, each a 7-byte header: CRC32, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, records, chunks = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks, pos = chunks + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def test_wandb_offline_run_holds_the_logged_history(logged_run) -> None:
    pytest.importorskip("wandb", reason="the wandb extra is not installed: pip install -e '.[wandb]'")
    out, result = logged_run
    (log,) = out.glob("wandb/offline-run-*/run-*.wandb")
    records = wandb_records(log)
    history = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    val_loss = [row["val/loss"] for row in history if "val/loss" in row]
    assert len(val_loss) == 2 and val_loss[-1] == pytest.approx(result["val/loss"])
    assert [row["score"] for row in history if "score" in row] == [pytest.approx(result["score"])]
    assert any("train/step_1/fool_rate" in row for row in history)
    assert any("train/loss_step" in row for row in history)
    assert sum(row.get("val/reconstructions/_type") == "images/separated" for row in history) == 2
    assert list([r.run for r in records if r.WhichOneof("record_type") == "run"][-1].tags) == TAGS


def test_tensorboard_gets_tags_hparams_and_the_step_dashboard(logged_run) -> None:
    out, result = logged_run
    assert json.loads((out / "metrics.json").read_text())["tags"] == TAGS
    accumulator = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0}).Reload()
    (hp_metric,) = accumulator.Scalars("hp_metric")
    assert hp_metric.value == pytest.approx(result["score"])
    (tags,) = accumulator.Tensors("tags/text_summary")
    assert tags.tensor_proto.string_val == [b"smoke, loggers"]

    (config,) = accumulator.Tensors(custom_scalar_metadata.CONFIG_SUMMARY_TAG)  # written once
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = {
        (category.title, chart.title): list(chart.multiline.tag)
        for category in layout.category
        for chart in category.chart
    }
    fool, d_mean = "fool rate (share of reconstructions D calls real)", "D's mean output on reconstructions"
    assert charts == {
        ("per step: train", fool): ["train/step_0/fool_rate", "train/step_1/fool_rate"],
        ("per step: train", "adversarial weight"): ["train/step_0/adv_weight", "train/step_1/adv_weight"],
        ("per step: train", d_mean): ["train/step_0/d_fake_mean", "train/step_1/d_fake_mean"],
        ("per step: train", "reconstruction loss"): ["train/step_0/rec_loss", "train/step_1/rec_loss"],
        ("per step: val", fool): ["val/step_0/fool_rate", "val/step_1/fool_rate"],
        ("per step: val", d_mean): ["val/step_0/d_fake_mean", "val/step_1/d_fake_mean"],
        ("per step: val", "reconstruction loss (mse)"): ["val/step_0/mse", "val/step_1/mse"],
    }
    logged = set(accumulator.Tags()["scalars"])
    assert {tag for tags in charts.values() for tag in tags} <= logged  # every chart's lines have data


def test_the_config_tree_is_printed_and_saved(logged_run, compose_cfg, tmp_path: Path, capsys) -> None:
    out, _ = logged_run
    tree = (out / "config_tree.log").read_text()
    assert tree.startswith("CONFIG") and "_target_: recursive_ae_gan.models.AdversarialAutoencoder" in tree
    assert f"tags:\n{' ' * 8}- smoke" in tree and str(out) in tree  # resolved: the run directory itself
    # extras.print_config=false: neither printed nor saved (the run stops at its data, after that point).
    with pytest.raises(UserError, match="train_size"):
        train(compose_cfg("extras.print_config=false", "data.train_size=100000"))
    assert "CONFIG" not in capsys.readouterr().out and not (tmp_path / "config_tree.log").exists()


@pytest.mark.parametrize(
    ("override", "error"),
    [("tags=5", "tags=5: expected a list of strings"), ("extras.print_config=maybe", "expected true or false")],
)
def test_the_config_check_knows_the_new_keys(compose_cfg, override: str, error: str) -> None:
    with pytest.raises(UserError, match=error):
        check(compose_cfg(override))


def test_a_logger_without_its_package_is_one_line(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # the forked CLI sees no wandb: as if not installed
    process = run_cli_forked(data_root, tmp_path, "logger=many")
    assert process.returncode == 1
    assert process.stderr.strip().splitlines() == [
        "error: logger.wandb needs the wandb package: pip install -e '.[wandb]' (or pip install wandb)"
    ]


def test_run_names_are_overrides_filesystem_safe_and_bounded(tmp_path: Path) -> None:
    overrides = ["model=rae", "model/net=conv", "data.dataset=my set/x", "data.root=/my data", "tags=[a]"]
    overrides.append(f"paths.log_dir={tmp_path}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "ckpt_path=/x/last.ckpt"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        # Where it reads and writes, what it resumes from and how it is labelled are not what a run is.
        assert run_name() == "model=rae,model_net=conv,data.dataset=my_set_x"
        stamp = Path(cfg.hydra.run.dir).name
        assert run_name("timed") == f"{stamp} model=rae,model_net=conv,data.dataset=my_set_x"
    finally:
        HydraConfig.instance().cfg = None
    long = safe_name("model.lr=" + "1" * 300)
    assert len(long) == MAX_NAME and long != safe_name("model.lr=" + "1" * 299)
    assert run_name() == ""  # outside a Hydra run: TensorBoard writes into tensorboard/ itself


def test_sweep_runs_are_named_by_their_swept_overrides_in_tensorboard(data_root: Path, tmp_path: Path) -> None:
    """``tensorboard --logdir <sweep>`` lists each job by what it varies; the constant overrides stay out."""
    quick = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    process = run_cli_forked(data_root, tmp_path, "hydra.mode=MULTIRUN", "seed=0,1", *quick, "collapse_threshold=0")
    assert process.returncode == 0, process.stderr[-3000:]
    (sweep,) = (tmp_path / "multiruns").iterdir()
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(sweep))  # what --logdir over the sweep lists
    assert sorted(multiplexer.Runs()) == ["0/tensorboard/seed=0", "1/tensorboard/seed=1"]


def test_a_refused_csv_write_names_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``CSVFiles``: the ``OSError`` of a refused write to an open file names no file; the logger gives it its own,
    which the console's one line then names (tests/run/test_atomic.py does it for TensorBoard's event file)."""
    logger = CSVFiles(tmp_path, name="csv", version="")
    logger.log_metrics({"val/loss": 0.5}, step=0)
    logger.save()

    def refusing_open(path: str, mode: str = "rb") -> io.BufferedWriter:  # a full disk: no room for a byte
        return io.BufferedWriter(RefusingFile(path, mode.replace("b", "")))

    monkeypatch.setattr(fsspec.implementations.local, "open", refusing_open, raising=False)  # fsspec's local files
    logger.log_metrics({"val/loss": 0.25}, step=1)
    with pytest.raises(OSError) as refused:
        logger.save()
    assert refused.value.filename == str(tmp_path / "csv" / "metrics.csv")
    assert (
        str(write_refused(refused.value)) == f"cannot write {tmp_path / 'csv' / 'metrics.csv'}: no space left on device"
    )
