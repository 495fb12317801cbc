"""compat: every module that moved imports by its old name, as the same module, with a DeprecationWarning naming
its new path; checked in a fresh interpreter, where nothing has imported the old names yet."""

from __future__ import annotations

import json
import subprocess
import sys

from recursive_ae_gan.compat import MOVED_MODULES

# In a fresh interpreter: today's names import without a warning of ours; then each old name, saying per name the
# warnings it raised and whether it is today's module object; then the import docs/evaluation.md once showed.
IMPORT_OLD_NAMES = """
import importlib, json, sys, warnings
names = json.loads(sys.argv[1])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for new in names.values():
        importlib.import_module(new)
ours = [str(w.message) for w in caught if "recursive_ae_gan" in str(w.message)]
seen = {}
for old, new in names.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    warned = [(w.category.__name__, str(w.message)) for w in caught]
    seen[old] = {"same": module is sys.modules[new], "warnings": warned}
from recursive_ae_gan.module import AdversarialAutoencoder
from recursive_ae_gan.models import AdversarialAutoencoder as Today
print(json.dumps({"ours": ours, "seen": seen, "same class": AdversarialAutoencoder is Today}))
"""


def fresh_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_every_old_name_is_todays_module_with_a_deprecation_warning() -> None:
    names = {f"recursive_ae_gan.{old}": f"recursive_ae_gan.{new}" for old, new in MOVED_MODULES.items()}
    result = fresh_python("-c", IMPORT_OLD_NAMES, json.dumps(names))
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["ours"] == [] and found["same class"]
    for old, new in names.items():
        assert found["seen"][old]["same"], old
        assert ["DeprecationWarning", f"{old} is deprecated: it moved to {new}"] in found["seen"][old]["warnings"], old


def test_the_warning_points_at_the_users_import_and_can_be_made_an_error() -> None:
    code = "from recursive_ae_gan.errors import UserError\nfrom recursive_ae_gan.core import errors\n"
    code += "assert UserError is errors.UserError"
    warned = fresh_python("-W", "always::DeprecationWarning", "-c", code)
    assert warned.returncode == 0, warned.stderr
    message = "DeprecationWarning: recursive_ae_gan.errors is deprecated: it moved to recursive_ae_gan.core.errors"
    assert f"<string>:1: {message}" in warned.stderr
    refused = fresh_python("-W", "error::DeprecationWarning", "-c", code)
    assert refused.returncode == 1 and refused.stderr.strip().endswith(message)
