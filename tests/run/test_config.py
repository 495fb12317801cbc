"""Every bad input ends as one ``error:`` line that names the key or file, exit status 1, no traceback.

The table runs the real CLI entry point in a child process forked from this one (``run_cli_forked``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
from helpers import assert_one_line_error, fixture_overrides, run_cli_forked
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from torchvision.datasets import CIFAR10

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.run.config import check


@pytest.fixture(scope="module")
def files(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bad files: truncated MNIST and CIFAR10 copies, a non-checkpoint, another model's checkpoint."""
    root = tmp_path_factory.mktemp("bad")
    mnist = shutil.copytree(data_root / "MNIST", root / "mnist" / "MNIST")
    images = mnist / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    cifar = shutil.copytree(data_root / CIFAR10.base_folder, root / "cifar" / CIFAR10.base_folder)
    batch = cifar / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:3000])
    (root / "notes.ckpt").write_text("not a checkpoint")
    (root / "a_file").write_text("a file, not a folder")
    return {"mnist": root / "mnist", "cifar": root / "cifar", "root": root}


@pytest.fixture(scope="module")
def gan_checkpoint(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint of AE+GAN on MNIST (one step), which a plain AE run must refuse."""
    from helpers import CONF_DIR
    from hydra import compose, initialize_config_dir

    out = tmp_path_factory.mktemp("gan")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", [*fixture_overrides(data_root, out), "model=ae_gan", f"paths.output_dir={out}"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = instantiate(cfg.model, image_shape=list(datamodule.image_shape))
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                        callbacks=[ModelCheckpoint(out, filename="gan")], limit_val_batches=0)  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    return out / "gan.ckpt"


# (overrides, fragments the one error line must contain); {mnist}, {cifar}, {root}, {gan} are filled in.
BAD_INPUTS = [
    (["model.lr=-0.1"], ["model.lr=-0.1", "> 0"]),
    (["model.recursion_depth=two"], ["model.recursion_depth='two'", "an integer"]),
    (["+model.foo=1"], ["model.foo", "not an argument"]),
    (["trainer.max_epoch=1"], ["trainer.max_epoch"]),
    (["trainer.precision=17"], ["trainer.precision=17", "bf16-mixed"]),
    (["trainer.accelerator=quantum"], ["trainer.accelerator='quantum'", "cpu"]),
    (["model.betas=[0.9,1.0]"], ["model.betas=[0.9, 1.0]", "[0, 1)"]),
    (["model=ae_gan", "model.adv_weight_bounds=[0.5,0.1]"], ["model.adv_weight_bounds", "low <= high"]),
    (["data=svhn"], ["data/svhn"]),
    (["data.train_size=100000"], ["data.train_size=100000", "lower them"]),
    (["ckpt_path={root}/missing.ckpt"], ["{root}/missing.ckpt", "not found"]),
    (["ckpt_path={root}/notes.ckpt"], ["{root}/notes.ckpt", "not a readable checkpoint"]),
    (["ckpt_path={gan}"], ["{gan}", "another model"]),
    (["model=ae_gan", "trainer.gradient_clip_val=1.0"], ["gradient_clip_val", "manual optimization"]),
    (["data.root={mnist}"], ["{mnist}/MNIST/raw/train-images-idx3-ubyte", "truncated or corrupt"]),
    (["data=cifar10", "data.root={cifar}"], ["{cifar}/cifar-10-batches-py/data_batch_2", "truncated or corrupt"]),
    (["paths.log_dir={root}/a_file/out"], ["{root}/a_file/out", "writable"]),
]


@pytest.mark.parametrize(("overrides", "fragments"), BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_is_one_line(data_root: Path, tmp_path: Path, files, gan_checkpoint, overrides, fragments) -> None:
    fill = {"mnist": files["mnist"], "cifar": files["cifar"], "root": files["root"], "gan": gan_checkpoint}
    process = run_cli_forked(data_root, tmp_path, *(o.format(**fill) for o in overrides))
    assert_one_line_error(process, *(f.format(**fill) for f in fragments))
    assert not list(tmp_path.glob("runs/*/checkpoints"))  # nothing trained


# The same check in-process, for more of the schema (the CLI test above shows the way out is one line).
CONFIG_ERRORS = [
    (["model.recursion_depth=-1"], r"model\.recursion_depth=-1: expected >= 0"),
    (["model=ae_gan", "model.balance=foo"], r"model\.balance='foo': expected one of alternate, report, target"),
    (["model.depth_schedule=random"], r"model\.depth_schedule='random': expected one of sum, cycle"),
    (["model.loss=l1"], r"model\.loss='l1': expected one of mse, bce or null"),
    (["data.batch_size=0"], r"data\.batch_size=0: expected >= 1"),
    (["data.channels=2"], r"data\.channels=2: expected one of 1, 3 or null"),
    (["data.train_split=train"], r"data\.train_split='train': expected a mapping or null"),
    (["collapse_threshold=-1"], r"collapse_threshold=-1: expected a number >= 0"),
    (["seed=abc"], r"seed='abc': expected an integer"),
    (["paths.log_dir=[a,b]"], r"paths\.log_dir=\['a', 'b'\]: expected a string"),
    (["+paths.logdir=x"], r"paths\.logdir is not a setting \(did you mean log_dir\?\)"),
    (["+foo=1"], r"foo is not a setting"),
    (["+model.recursion_dept=1"], r"model\.recursion_dept is not an argument .* \(did you mean recursion_depth\?\)"),
    (["model/net=conv", "+model.net.stage=2"], r"model\.net\.stage is not an argument of .*ConvAutoencoder"),
    (["model/net=conv", "model.net.widths=[8,x]"], r"model\.net\.widths=\[8, 'x'\]: expected a list of integers"),
    (["model=ae_gan", "model.d_lr=0"], r"model\.d_lr=0: expected > 0"),
    # The game's model takes the autoencoder's arguments as **kwargs: they are checked as the autoencoder's.
    (["model=rae_gan", "model.recursion_depth=two"], r"model\.recursion_depth='two': expected an integer"),
    (["model=ae_gan", "model.lr=0"], r"model\.lr=0: expected > 0"),
    (["model=ae_gan", "+model.recursion_dept=1"], r"not an argument of .*AdversarialAutoencoder \(did you mean rec"),
    (["trainer.max_epochs=-2"], r"trainer\.max_epochs=-2: expected >= -1"),
    (["+callbacks.grid.num_images=3"], r"callbacks\.grid=\{'num_images': 3\} has no _target_"),
    (["callbacks.reconstruction_grid.num_images=many"], r"callbacks\.reconstruction_grid\.num_images='many'"),
    (["logger.tensorboard.default_hp_metric=maybe"], r"logger\.tensorboard\.default_hp_metric='maybe'"),
    # Every realism setting, before any work (Lightning read realism.epochs=-1 as no limit: a judge forever).
    (["realism=default", "realism.epochs=-1"], r"realism\.epochs=-1: expected >= 1"),
    (["realism=default", "realism.max_epochs=0"], r"realism\.max_epochs=0: expected >= 1"),
    (["realism=default", "realism.min_epochs=400"], r"realism\.min_epochs=400 is above realism\.max_epochs=300"),
    (["realism=default", "realism.patience=0"], r"realism\.patience=0: expected >= 1"),
    (["realism=default", "realism.val_fraction=1.5"], r"realism\.val_fraction=1\.5: expected in \(0, 1\)"),
    (["realism=default", "realism.bf16=maybe"], r"realism\.bf16='maybe': expected true or false"),
    (["realism=default", "realism.judges.conv.widths=[8,x]"], r"realism\.judges\.conv\.widths=\[8, 'x'\]"),
    (["realism=default", "+realism.judges.highpass.depth=3"], r"realism\.judges\.highpass\.depth is not an arg"),
]


@pytest.mark.parametrize(("overrides", "message"), CONFIG_ERRORS, ids=[" ".join(o) for o, _ in CONFIG_ERRORS])
def test_config_check_names_key_value_and_expectation(compose_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        check(compose_cfg(*overrides))
    assert "\n" not in str(err.value)


def test_the_shipped_configs_pass_the_check(compose_cfg) -> None:
    for overrides in (["model=ae"], ["model=rae_gan"], ["data=cifar10", "model=rae"], ["experiment=cifar10_rae_gan"],
                      ["model=ae_gan", "model/discriminator=conv", "model/net=conv"], ["trainer=ddp"],
                      ["realism=default"]):  # fmt: skip
        check(compose_cfg(*overrides))
