"""Every recipe of docs/architecture.md ("Recipes") works as the doc prints it.

Each Python snippet is run in the namespace of the module the recipe names, as if pasted at its end, and undone
after its test; each YAML snippet is saved where the recipe says, in a config folder of the test's own passed with
``hydra.searchpath``. Then what the recipe promises is checked end to end.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import torch
from helpers import CONF_DIR, ONE_EPOCH, REPO, ok, run_cli_forked, run_dir, run_entry_forked, write_image_folder
from hydra import compose, initialize_config_dir
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from recursive_ae_gan.analysis.report import write_report
from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.data import sources
from recursive_ae_gan.models import balance, metrics
from recursive_ae_gan.perf import bench
from recursive_ae_gan.run.config import check

ARCHITECTURE = REPO / "docs" / "architecture.md"


def recipe(title: str) -> list[str]:
    """The code blocks of the recipe whose bold title starts with ``title``, in order."""
    recipes = ARCHITECTURE.read_text().split("\n## Recipes\n", 1)[1].split("\n## ", 1)[0]
    text = recipes.split(f"**{title}", 1)[1].split("\n**", 1)[0]  # up to the next recipe
    return re.findall(r"^```\w*\n(.*?)^```", text, flags=re.M | re.S)


@contextmanager
def pasted(module: ModuleType, code: str) -> Iterator[None]:
    """``code`` run in ``module``'s namespace, as at the module's end; undone afterwards (the names it added or
    rebound, the entries it made in the module's registries), so that no other test sees it."""
    namespace = vars(module)
    names = dict(namespace)
    registries = {name: dict(value) for name, value in namespace.items() if name.isupper() and isinstance(value, dict)}
    exec(compile(code, module.__file__, "exec"), namespace)
    try:
        yield
    finally:
        for name in set(namespace) - set(names):
            del namespace[name]
        namespace.update(names)
        for name, entries in registries.items():
            namespace[name].clear()
            namespace[name].update(entries)


def user_config(folder: Path, group: str, name: str, text: str) -> str:
    """``text`` saved as ``<folder>/<group>/<name>.yaml``; the override that puts ``folder`` on the searchpath."""
    (folder / group).mkdir(parents=True, exist_ok=True)
    (folder / group / f"{name}.yaml").write_text(text)
    return f"hydra.searchpath=[file://{folder}]"


def test_a_new_balance_policy_is_checked_and_played_by_the_game_and_the_plain_loop(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    (code,) = recipe("A new balance policy")
    with pasted(balance, code):
        check(compose_cfg("model=ae_gan", "model.balance=never"))  # the config check takes the new name
        with pytest.raises(UserError, match="expected one of alternate, report, target, never$"):
            check(compose_cfg("model=ae_gan", "model.balance=nevr"))

        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            s = bench.plan(compose("bench", ["bench.quick=true", "bench.device=cpu"]).bench)
            cfg = bench.train_config(s, "mnist", "ae_gan", batch_size=8)
        cfg.model.balance = "never"
        torch.manual_seed(cfg.seed)
        initial = instantiate(cfg.model, image_shape=list(bench.SHAPES["mnist"])).state_dict()
        # The game (a real fit) and the bench's plain loop, interleaved as the bench runs them: 5 batches each.
        module, timed = bench.run_both(cfg, lambda plain: bench.Interleave(plain, 1, 2, 2, sync=lambda: None))

        assert type(module.balance).__name__ == type(timed.plain.balance).__name__ == "Never"
        framework = module.state_dict()
        torch.testing.assert_close(timed.plain.state_dict(), framework)  # the same policy, the same training
        assert all(torch.equal(initial[k], framework[k]) for k in initial if k.startswith("discriminator."))
        assert any(not torch.equal(initial[k], framework[k]) for k in initial if k.startswith("net."))
    with pytest.raises(UserError, match="expected one of alternate, report, target$"):  # undone
        check(compose_cfg("model=ae_gan", "model.balance=never"))


def test_a_new_step_metric_is_logged_printed_by_evaluate_and_tabulated_by_report(
    data_root: Path, tmp_path: Path
) -> None:
    (code,) = recipe("A new step metric")
    with pasted(metrics, code):
        # The CLI in a child forked from this process: it has the metric too, as a run of the edited package would.
        ok(run_cli_forked(data_root, tmp_path / "out", "model=rae", "model.recursion_depth=1", *ONE_EPOCH))
        run = run_dir(tmp_path / "out")
        result = json.loads((run / "metrics.json").read_text())
        for step in (0, 1):
            mae, mse = result[f"test/step_{step}/mae"], result[f"test/step_{step}/mse"]
            assert mse <= mae <= math.sqrt(mse)  # errors in [0, 1]: e^2 <= |e|, and mean |e| <= rms e
            assert f"val/step_{step}/mae" in result

        printed = ok(run_entry_forked("evaluate", tmp_path / "eval", f"ckpt_path={run}/checkpoints/last.ckpt",
                                      "eval.accelerator=cpu", "eval.max_depth=1", "~realism")).stdout  # fmt: skip
        header, _, step0, *_ = [line.split("|")[1:-1] for line in printed.splitlines() if line.startswith("|")]
        column = [c.strip() for c in header].index("mae")
        evaluated = json.loads((run / "checkpoints" / "eval.json").read_text())
        assert evaluated["test/step_0/mae"] == pytest.approx(result["test/step_0/mae"], rel=1e-5)
        assert float(step0[column]) == pytest.approx(evaluated["test/step_0/mae"], rel=1e-3)

        write_report(tmp_path / "out")
        with (tmp_path / "out" / "report_runs.csv").open(newline="") as f:
            (row,) = csv.DictReader(f)
        assert float(row["step0_mae"]) == pytest.approx(result["test/step_0/mae"])
        assert float(row["last_mae"]) == pytest.approx(result["test/step_1/mae"])
        assert "step0_mae" in (tmp_path / "out" / "report.md").read_text()
    assert "mae" not in metrics.reported_metrics()  # undone


def test_a_new_dataset_kind_is_selected_by_a_config_file_and_loads(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    code, yaml = recipe("A new dataset kind")
    folder = write_image_folder(tmp_path / "images", n=24, size=16, corrupt=False)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))[:20]
    (folder / "list.txt").write_text("\n".join(files) + "\n")
    searchpath = user_config(tmp_path / "my_configs", "data", "list", yaml)
    with pasted(sources, code):
        cfg = compose_cfg("data=list", f"data.root={folder / 'list.txt'}", "data.image_size=16", "data.num_workers=0",
                          "data.train_size=null", "data.val_size=4", "data.test_size=4", searchpath)  # fmt: skip
        check(cfg)
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        loaded = torch.cat([datamodule.images(split) for split in ("train", "val", "test")])
        assert loaded.shape == (20, 3, 16, 16)  # the 20 listed files of the 24, converted as data=folder converts
        reference = sources.FileItems([folder / f for f in files], "listed", 3, 16)
        expected = torch.stack([reference[i] for i in range(len(files))])
        as_rows = lambda images: sorted(map(tuple, images.flatten(1).tolist()))  # noqa: E731  (the split shuffles)
        assert as_rows(loaded) == as_rows(expected)


def test_a_new_launcher_config_composes(tmp_path: Path) -> None:
    (yaml,) = recipe("A new launcher")
    name = re.search(r"conf/hydra/launcher/(\w+)\.yaml`, runs", ARCHITECTURE.read_text())[1]
    searchpath = user_config(tmp_path / "my_configs", "hydra/launcher", name, yaml)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", [f"hydra/launcher={name}", searchpath], return_hydra_config=True)
    assert cfg.hydra.runtime.choices["hydra/launcher"] == name
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert cfg.hydra.launcher.timeout_min == 240
    assert get_object(cfg.hydra.launcher._target_).__name__ == "LocalLauncher"  # the plugin is installed
