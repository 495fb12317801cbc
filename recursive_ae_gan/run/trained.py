"""A trained model read back from its checkpoint: the one way ``evaluate``, ``reconstruct`` and the tests load one.

A checkpoint's hyperparameters hold the network configs and the image shape, so the checkpoint alone rebuilds its
model (``read_trained(ckpt).model(...)``). Checkpoints from before that need their run's config
(``<run>/.hydra/config.yaml``), read through ``compat.upgrade_old_run_config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recursive_ae_gan.compat import trusted, upgrade_old_run_config
from recursive_ae_gan.core.console import one_line
from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.models import AdversarialAutoencoder, RecursiveAutoencoder
from recursive_ae_gan.run.checkpoints import check_fits, read_checkpoint

EXTRA_STEPS = 3  # evaluate and reconstruct look this many steps past the trained recursion_depth by default


@dataclass(frozen=True)
class Trained:
    """A checkpoint of this package's models: its contents and the config that rebuilds its model."""

    path: Path
    checkpoint: dict
    config: dict  # the model's: instantiate(config, image_shape=...) builds it untrained
    image_shape: list[int] | None  # None: a checkpoint from before the image shape was kept

    @property
    def recursion_depth(self) -> int:
        return self.config.get("recursion_depth", 0)

    @property
    def default_depth(self) -> int:
        """The last step evaluated when none is asked for."""
        return self.recursion_depth + EXTRA_STEPS

    def model(self, eval_depth: int, image_shape: list[int] | None = None) -> RecursiveAutoencoder:
        """The trained model on the CPU, not compiled, evaluating steps 0..``eval_depth`` (at least the trained
        ones); ``image_shape`` for checkpoints that do not keep theirs."""
        shape = list(image_shape or self.image_shape)
        settings = {"image_shape": shape, "eval_depth": max(eval_depth, self.recursion_depth), "compile": False}
        try:
            model = instantiate(self.config, **settings)
        except (InstantiationException, TypeError, KeyError) as err:  # an unknown network or argument
            target = self.config.get("_target_", "?").rpartition(".")[2]
            raise UserError(f"cannot rebuild the model of ckpt_path={self.path} as {target}: {one_line(err)}") from None
        check_fits(self.checkpoint, model, self.path)
        model.load_state_dict(self.checkpoint["state_dict"])
        return model


def read_trained(ckpt: Path, run_config: DictConfig | None = None) -> Trained:
    """Read ``ckpt``; ``run_config``: its run's ``.hydra/config.yaml``, needed by checkpoints from before their
    hyperparameters held the network configs (and then trusted to unpickle in full, ``read_checkpoint``)."""
    run_config = upgrade_old_run_config(run_config) if run_config is not None else None
    checkpoint = read_checkpoint(ckpt, trusted=trusted(run_config))
    hparams = checkpoint.get("hyper_parameters")
    if isinstance(hparams, dict) and isinstance(hparams.get("net"), dict) and "_target_" in hparams["net"]:
        shape = hparams.get("image_shape")
        if shape is not None and len(shape) == 3:
            return Trained(ckpt, checkpoint, model_config(hparams), list(shape))
    if run_config is None:
        raise UserError(
            f"ckpt_path={ckpt} is not a checkpoint of recursive_ae_gan's models (no network config and image "
            f"shape in its hyper_parameters); give a run's checkpoints/last.ckpt"
        )
    return Trained(ckpt, checkpoint, OmegaConf.to_container(run_config.model, resolve=True), None)


def model_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """The config that rebuilds a model from its checkpoint's hyperparameters: only the adversarial module has a
    discriminator. The module builds its networks (``_recursive_: false``), as training does."""
    cls = AdversarialAutoencoder if "discriminator" in hparams else RecursiveAutoencoder
    own = {k: v for k, v in hparams.items() if k != "image_shape"}
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", "_recursive_": False, "_convert_": "all", **own}


def run_dir_of(ckpt: Path) -> Path:
    """The run that wrote ``ckpt``: its nearest parent folder holding ``.hydra/config.yaml``."""
    for folder in ckpt.resolve().parents:
        if (folder / ".hydra" / "config.yaml").is_file():
            return folder
    raise UserError(
        f"no run config (.hydra/config.yaml) in any folder above {ckpt}; ckpt_path must be a checkpoint "
        f"inside a training run's directory, e.g. outputs/runs/X/checkpoints/last.ckpt"
    )
