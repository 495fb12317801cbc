"""reconstruct: a user's own images through a trained checkpoint, step by step; checkpoints rebuild their model alone.

One AE (RGB) and one RAE+GAN (grayscale, recursion_depth 1) are trained once, through the CLI, on a
folder of PNGs; the tests read other PNGs (RGB, grayscale, wider, corrupt) through them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import CONF_DIR, run_entry_forked, write_image_folder
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torchvision.io import read_image

from recursive_ae_gan.analysis.reconstruct import grid_names, reconstruct
from recursive_ae_gan.core import console
from recursive_ae_gan.data.sources import FileItems
from recursive_ae_gan.models import AdversarialAutoencoder, RecursiveAutoencoder
from recursive_ae_gan.run.train import train

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
AE_SIZE, GAN_SIZE = 32, 24  # the runs' data.image_size
GAN_DEPTH = 1  # the RAE+GAN run's model.recursion_depth
TINY = ["model.net.widths=[8,8,8]", "model.net.code_size=16"]
RUNS = {
    "ae": ["model=ae", f"data.image_size={AE_SIZE}", *TINY],
    "rae_gan": [
        "model=rae_gan", f"model.recursion_depth={GAN_DEPTH}", "model.warmup_epochs=0", "data.channels=1",
        f"data.image_size={GAN_SIZE}", *TINY,
    ],
    # A stochastic decoder: noise drawn at every evaluation (fitted to the residuals before validation).
    "noisy": [
        "model=ae", f"data.image_size={AE_SIZE}", "model/net=patch", "model.net.code_channels=4",
        "model.net.noise=true", "callbacks=noise",
    ],
}  # fmt: skip


def tile(size: int, tiles: int) -> tuple[int, int, int]:
    """The shape of a one-row make_grid of ``tiles`` square images (2-pixel padding), as PNG: RGB."""
    return 3, size + 4, tiles * (size + 2) + 2


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each run's last.ckpt: 1 epoch on 16 PNGs (48x48, some grayscale or wider), trained by train() in-process."""
    base = tmp_path_factory.mktemp("reconstruct")
    images = write_image_folder(base / "train_images", n=16, corrupt=False)
    common = [
        "data=folder", f"data.root={images}", "data.val_size=2", "data.test_size=2", "trainer.max_epochs=1",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "logger=csv", "collapse_threshold=0", "data.num_workers=0", "data.batch_size=4",
    ]  # fmt: skip
    for name, overrides in RUNS.items():
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", [*common, *overrides, f"paths.output_dir={base / name}"])
        assert train(cfg)["status"] == "ok"
    return {name: base / name / "checkpoints" / "last.ckpt" for name in RUNS}


@pytest.fixture(scope="module")
def user_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six PNGs of 40x40 (two grayscale, one 80x40) in two sub-folders, plus broken.png and truncated.png."""
    return write_image_folder(tmp_path_factory.mktemp("user") / "photos", n=6, size=40, seed=1)


def reconstruct_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="reconstruct", overrides=["accelerator=cpu", "progress_bar=false", *overrides])


# Imports only the package, in a fresh folder: no config file can be found.
LOAD_SCRIPT = """
import sys, torch
from recursive_ae_gan.models import AdversarialAutoencoder, RecursiveAutoencoder
x = torch.load("inputs.pt")
out = {}
for name, cls, path in [("ae", RecursiveAutoencoder, sys.argv[1]), ("rae_gan", AdversarialAutoencoder, sys.argv[2])]:
    model = cls.load_from_checkpoint(path, weights_only=True).eval()
    with torch.no_grad():
        out[name] = {"outputs": model(x[name], 3), "state_dict": model.state_dict(), "hparams": dict(model.hparams)}
torch.save(out, "rebuilt.pt")
"""


@pytest.fixture(scope="module")
def fresh_processes(
    checkpoints: dict[str, Path], user_images: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The commands, each with its own empty working folder: ``load`` (LOAD_SCRIPT on seeded inputs.pt) in a fresh
    Python, the point of it; meanwhile ``reconstruct`` (the AE on the user's images, the defaults) and ``error``
    (the same with depth=-1), the real entry point in children forked from this process."""
    cwd = {name: tmp_path_factory.mktemp(name) for name in ("load", "reconstruct", "error")}
    torch.manual_seed(0)
    inputs = {"ae": torch.rand(4, 3, AE_SIZE, AE_SIZE), "rae_gan": torch.rand(4, 1, GAN_SIZE, GAN_SIZE)}
    torch.save(inputs, cwd["load"] / "inputs.pt")
    load_args = [sys.executable, "-c", LOAD_SCRIPT, str(checkpoints["ae"]), str(checkpoints["rae_gan"])]
    load = subprocess.Popen(
        load_args, cwd=cwd["load"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    reconstruct_args = [f"ckpt_path={checkpoints['ae']}", f"input={user_images}"]
    argv = {"reconstruct": ["accelerator=cpu", "progress_bar=false", "batch_size=4"], "error": ["depth=-1"]}
    done = {
        name: run_entry_forked(
            "reconstruct", tmp_path_factory.mktemp(f"{name}_console"), *reconstruct_args, *more, cwd=cwd[name]
        )
        for name, more in argv.items()
    }
    stdout, stderr = load.communicate(timeout=300)
    done["load"] = subprocess.CompletedProcess(load_args, load.returncode, stdout, stderr)
    return {name: (process, cwd[name]) for name, process in done.items()}


def plain(value: object) -> bool:
    """Only the plain containers and scalars of YAML: no OmegaConf (or any other) objects."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(plain(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_checkpoints_rebuild_their_model_in_a_fresh_process(checkpoints: dict[str, Path], fresh_processes) -> None:
    """load_from_checkpoint needs no config file and no argument: the hparams hold the network configs."""
    process, cwd = fresh_processes["load"]
    assert process.returncode == 0, process.stderr[-3000:]
    rebuilt = torch.load(cwd / "rebuilt.pt", weights_only=True)  # weights_only: plain hparams, or it fails
    inputs = torch.load(cwd / "inputs.pt", weights_only=True)

    for name, cls in [("ae", RecursiveAutoencoder), ("rae_gan", AdversarialAutoencoder)]:
        saved = torch.load(checkpoints[name], map_location="cpu", weights_only=True)["state_dict"]
        assert rebuilt[name]["state_dict"].keys() == saved.keys()
        assert all(torch.equal(rebuilt[name]["state_dict"][k], v) for k, v in saved.items())
        assert any(k.startswith("discriminator.") for k in saved) is (name == "rae_gan")
        hparams = rebuilt[name]["hparams"]
        assert plain(hparams) and hparams["net"]["_target_"] == "recursive_ae_gan.networks.ConvAutoencoder"
        assert ("discriminator" in hparams) is (name == "rae_gan")

        model = cls.load_from_checkpoint(checkpoints[name], map_location="cpu", weights_only=True).eval()
        with torch.no_grad():
            here = model(inputs[name], 3)  # (4 steps, B, C, H, W)
            again = model(here[0], 0)[0]  # step 0 of step 0's images
        assert here.shape == (4, *inputs[name].shape)
        torch.testing.assert_close(rebuilt[name]["outputs"], here)
        torch.testing.assert_close(again, here[1])  # step 1 is the autoencoder applied to step 0


def test_cli_writes_one_grid_per_image(checkpoints: dict[str, Path], user_images: Path, fresh_processes) -> None:
    """The AE (RGB 32x32) on grayscale, RGB and wider PNGs: the default depth (0 + 3), the default output
    folder, sub-folders kept, the two corrupt files skipped with a warning each."""
    process, cwd = fresh_processes["reconstruct"]
    assert process.returncode == 0, process.stderr[-3000:]
    assert list(cwd.iterdir()) == []  # no run directory, .hydra/ or log file of its own
    out = checkpoints["ae"].parent.parent / "reconstructions"  # the run directory's
    assert f"wrote 6 reconstruction grid(s) to {out}" in process.stdout
    skipped = [line for line in process.stdout.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 2 and "broken.png" in skipped[0] and "truncated.png" in skipped[1]

    grids = sorted(out.rglob("*.png"))
    inputs = sorted(user_images.rglob("img_*.png"))
    assert [g.relative_to(out) for g in grids] == [
        p.relative_to(user_images).with_name(f"{p.stem}_steps.png") for p in inputs
    ]
    model = RecursiveAutoencoder.load_from_checkpoint(checkpoints["ae"], map_location="cpu", weights_only=True).eval()
    for source, grid_path in zip(inputs, grids, strict=True):
        grid = read_image(str(grid_path))
        assert grid.shape == tile(AE_SIZE, 5)  # the input, then steps 0..3
        tiles = [grid[:, 2 : 2 + AE_SIZE, 2 + i * (AE_SIZE + 2) : 2 + i * (AE_SIZE + 2) + AE_SIZE] for i in range(5)]
        # The first tile is the input converted as data=folder converts it: RGB, short side resized, centre-cropped.
        expected = FileItems([source], "input", 3, AE_SIZE)[0]
        assert torch.equal(tiles[0], expected)
        with torch.no_grad():
            steps = model(expected[None].float() / 255, 3)[:, 0]  # (4, C, H, W)
        for step, image in zip(steps, tiles[1:], strict=True):  # PNG rounds to 1/255
            assert (image.float() - step * 255).abs().max() <= 1


def test_cli_error_exits_1_with_one_line(fresh_processes) -> None:
    """Through Hydra: one ``error:`` line and nothing else (no traceback, no Hydra "Error executing job")."""
    process, cwd = fresh_processes["error"]
    assert process.returncode == 1
    assert "Traceback" not in process.stderr and "Error executing job" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: depth=-1 must be a whole number >= 0 (or null)"]
    assert list(cwd.iterdir()) == []


def test_adversarial_model_on_one_file_converts_to_its_grayscale(
    checkpoints: dict[str, Path], user_images: Path, tmp_path: Path
) -> None:
    """The RAE+GAN (grayscale 24x24, trained on steps 0..1) on one RGB 40x40 file; depth=0 shows step 0 only."""
    source = user_images / "cats" / "img_001.png"  # RGB
    cfg = reconstruct_cfg(f"ckpt_path={checkpoints['rae_gan']}", f"input={source}", f"output={tmp_path}", "depth=0")
    out, written = reconstruct(cfg)
    assert out == tmp_path and written == [tmp_path / "img_001_steps.png"]
    grid = read_image(str(written[0]))
    assert grid.shape == tile(GAN_SIZE, 2)  # the input, then step 0
    assert torch.equal(grid[0], grid[1]) and torch.equal(grid[0], grid[2])  # grayscale, saved as RGB
    expected = FileItems([source], "input", 1, GAN_SIZE)[0]
    assert torch.equal(grid[:1, 2 : 2 + GAN_SIZE, 2 : 2 + GAN_SIZE], expected)

    deeper_cfg = reconstruct_cfg(f"ckpt_path={checkpoints['rae_gan']}", f"input={source}", f"output={tmp_path}")
    _, deeper = reconstruct(deeper_cfg)  # the default depth: recursion_depth + 3
    assert read_image(str(deeper[0])).shape == tile(GAN_SIZE, GAN_DEPTH + 3 + 2)


def test_a_stochastic_decoders_grids_are_the_same_for_the_same_seed(
    checkpoints: dict[str, Path], user_images: Path, tmp_path: Path
) -> None:
    """The noise is drawn from ``seed``: a second command gives the same grid, another seed another one."""
    source = user_images / "cats" / "img_001.png"
    grids = []
    for name, seed in [("first", 0), ("again", 0), ("other", 1)]:
        cfg = reconstruct_cfg(
            f"ckpt_path={checkpoints['noisy']}", f"input={source}", f"output={tmp_path / name}", f"seed={seed}"
        )
        _, (written,) = reconstruct(cfg)
        grids.append(read_image(str(written)))
    first, again, other = grids
    assert torch.equal(first, again)
    input_tile = (slice(None), slice(2, 2 + AE_SIZE), slice(2, 2 + AE_SIZE))
    assert torch.equal(first[input_tile], other[input_tile]) and not torch.equal(first, other)  # only the draws differ


def test_grid_names_keep_sub_folders_and_tell_same_stems_apart() -> None:
    root = Path("/photos")
    paths = [root / "a.png", root / "a.jpg", root / "b.png", root / "x" / "a.png"]
    assert grid_names(paths, root) == [
        Path("a_png_steps.png"),
        Path("a_jpg_steps.png"),
        Path("b_steps.png"),
        Path("x/a_steps.png"),
    ]


def one_line_error(cfg: DictConfig) -> str:
    """What the CLI does with ``cfg``: ``console.one_line_errors`` (``main`` runs inside it) exits with status 1
    and one ``error:`` line (``sys.exit(message)``), no traceback."""
    with pytest.raises(SystemExit) as exit_info, console.one_line_errors():
        reconstruct(cfg)
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message
    return message


def test_bad_input_is_one_line_error(checkpoints: dict[str, Path], user_images: Path, tmp_path: Path) -> None:
    """Each mistake ends as one line that names it, before anything is written."""
    ckpt, images, out = checkpoints["ae"], user_images, tmp_path / "out"
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    foreign = {"state_dict": {}, "hyper_parameters": {"lr": 0.1}}
    elsewhere = {  # another package's network
        "pytorch-lightning_version": "2.6.6",
        "state_dict": {},
        "hyper_parameters": {"net": {"_target_": "elsewhere.Net"}, "image_shape": [3, 8, 8]},
    }
    oblong = {**elsewhere, "hyper_parameters": {"net": {"_target_": "elsewhere.Net"}, "image_shape": [3, 8, 6]}}
    old = {**elsewhere, "hyper_parameters": OmegaConf.create(elsewhere["hyper_parameters"])}  # not plain
    for name, checkpoint in [("foreign", foreign), ("elsewhere", elsewhere), ("oblong", oblong), ("omegaconf", old)]:
        torch.save(checkpoint, tmp_path / f"{name}.ckpt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    (tmp_path / "corrupt").mkdir()
    for source in [images / "cats" / "broken.png", images / "dogs" / "truncated.png"]:
        (tmp_path / "corrupt" / source.name).write_bytes(source.read_bytes())
    (tmp_path / "a_file").write_text("")
    cases = {
        "no ckpt_path given": [f"input={images}"],
        "no input given": [f"ckpt_path={ckpt}"],
        f"checkpoint not found: {tmp_path / 'nope.ckpt'}": [f"ckpt_path={tmp_path / 'nope.ckpt'}", "input=x"],
        "not a file written by torch.save": [f"ckpt_path={tmp_path / 'notes.ckpt'}", "input=x"],
        "holds omegaconf.dictconfig.DictConfig objects": [f"ckpt_path={tmp_path / 'omegaconf.ckpt'}", "input=x"],
        "is not a checkpoint of recursive_ae_gan's models": [f"ckpt_path={tmp_path / 'foreign.ckpt'}", "input=x"],
        "cannot rebuild the model": [f"ckpt_path={tmp_path / 'elsewhere.ckpt'}", "input=x"],
        "trained on 8x6 images": [f"ckpt_path={tmp_path / 'oblong.ckpt'}", "input=x"],
        f"input not found: {tmp_path / 'nope'}": [f"ckpt_path={ckpt}", f"input={tmp_path / 'nope'}"],
        f"under input={tmp_path / 'empty'}": [f"ckpt_path={ckpt}", f"input={tmp_path / 'empty'}"],
        f"cannot decode {images / 'cats' / 'broken.png'}": [
            f"ckpt_path={ckpt}",
            f"input={images / 'cats' / 'broken.png'}",
        ],
        "none of the 2 image files of input can be decoded": [f"ckpt_path={ckpt}", f"input={tmp_path / 'corrupt'}"],
        "depth=-1 must be a whole number >= 0": [f"ckpt_path={ckpt}", f"input={images}", "depth=-1"],
        "batch_size=0 must be a whole number >= 1": [f"ckpt_path={ckpt}", f"input={images}", "batch_size=0"],
        "accelerator=nope": [f"ckpt_path={ckpt}", f"input={images}", "accelerator=nope"],
        f"cannot create output={tmp_path / 'a_file'}": [
            f"ckpt_path={ckpt}",
            f"input={images}",
            f"output={tmp_path / 'a_file'}",
        ],
    }
    for fragment, overrides in cases.items():
        assert fragment in one_line_error(reconstruct_cfg(f"output={out}", *overrides)), overrides  # the last wins
    assert not out.exists()  # nothing written on a bad command
