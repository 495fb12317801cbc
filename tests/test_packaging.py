"""The package installs like one: a wheel built from the repository carries the configs, and the installed
package (not the repository) composes them from an empty folder, a user's own configs included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
# The build runs on a copy of the repository without what git ignores, so that the build's own files (build/,
# *.egg-info) stay out of the working tree and two test runs at once cannot collide.
TOP_LEVEL_IGNORED = {".git", ".venv", "outputs", "data", "build", "dist"}
PACKAGES = ("recursive_ae_gan", "hydra_plugins")  # the wheel's top-level packages


def _ignored(folder: str, names: list[str]) -> set[str]:
    top = TOP_LEVEL_IGNORED if Path(folder) == REPO else set()
    return {n for n in names if n in top or n == "__pycache__" or n.endswith((".egg-info", "_cache"))}


# A user's own data config, kept outside conf/ and passed with hydra.searchpath (docs/data.md).
USER_DATA_CONFIG = """\
_target_: recursive_ae_gan.data.ImageDataModule
_convert_: all
dataset: torchvision.datasets.FashionMNIST
root: /somewhere/fashion
download: false
train_split: {train: true}
test_split: {train: false}
batch_size: 32
seed: ${seed}
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel that ``pip wheel .`` builds, offline, with the environment's setuptools."""
    source, out = tmp_path_factory.mktemp("build") / "source", tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, source, ignore=_ignored)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(source)],
        check=True,
    )
    (built,) = out.glob("recursive_ae_gan-*.whl")
    return built


def test_wheel_holds_every_module_and_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"recursive_ae_gan/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in REPO.glob("conf/**/*.yaml")}
    modules = {p.relative_to(REPO).as_posix() for package in PACKAGES for p in REPO.glob(f"{package}/**/*.py")}
    assert len(configs) > 20 and configs <= names
    assert modules <= names
    assert not any("__pycache__" in name or name.startswith(("conf/", "build/")) for name in names)


def test_installed_wheel_composes_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    target, empty, user = tmp_path / "site", tmp_path / "empty", tmp_path / "my_configs"
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--quiet", "--no-deps", "--no-index"]
        + ["--target", str(target), str(wheel)],
        check=True,
    )
    empty.mkdir()
    (user / "data").mkdir(parents=True)
    (user / "data" / "fashion.yaml").write_text(USER_DATA_CONFIG)
    # The suite's environment provides the dependencies; the package comes from the target, ahead of the
    # editable install on sys.path.
    env = {**os.environ, "PYTHONPATH": str(target)}
    overrides = ["data=fashion", f"hydra.searchpath=[file://{user}]", "model=rae"]
    result = subprocess.run(
        [sys.executable, "-m", "recursive_ae_gan.train", "--cfg", "all", *overrides],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    (main,) = [s.path for s in cfg.hydra.runtime.config_sources if s.provider == "main"]
    assert Path(main) == target / "recursive_ae_gan" / "conf"
    assert cfg.data.dataset == "torchvision.datasets.FashionMNIST" and cfg.data.root == "/somewhere/fashion"
    assert cfg.model.recursion_depth == 2 and cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert list(empty.iterdir()) == []  # --cfg composes only: no run directory
