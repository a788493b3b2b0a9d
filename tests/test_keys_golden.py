"""Golden keys: cache keys are part of the on-disk format and must never change by accident.

If this test fails, a change altered the keys of existing entries: every user's cache would
silently go cold. Either undo the change, or make it deliberate (bump ``memollm.keys.KEY_FORMAT``,
note it in CHANGELOG.md) and re-pin the table below.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

HERE = Path(__file__).resolve().parent

GOLDEN = {
    "complete-default": "d213e7cd026e4af71d34f1f1497eabca",
    "complete-by-name": "d213e7cd026e4af71d34f1f1497eabca",
    "complete-secrets": "930b3e128a6371ae07efe2fc9288df2c",
    "complete-model": "4458aa4b4a680112cd13f448fe9b7bb1",
    "complete-unicode": "63322aec649f119416a461e3d95f5af1",
    "complete-bytes": "1dddb07bad0214d457410b77bbee23ee",
    "complete-scalars": "38c3551327cba59a6c80f4708de6a15d",
    "summarize": "13b044d6a7344741f8b7fd37186fd029",
    "chat-messages": "f84c09401fa29e50588b132df5264f83",
    "chat-tools": "e44ad6d83112e073f76606abe75bf591",
    "chat-model-class": "5b94e48e09cfda01ce7cf1ed2c803f0f",
    "chat-model-instance": "c28230498c473aa4888544dc2b03ab71",
    "chat-varargs": "b0a3adffa823798e9c7c0c229ecc14b3",
    "chat-types": "6296540c70e905075a8f775e85396f8e",
    "acomplete": "69fc3813c0f413a364ef767e346cb73c",
    "agent-ask": "e3a8f7093a898074a0deaa0a6de8cf67",
}

# Loads tests/golden_module.py as the module "golden_module" however the tests are run
# (the module name is part of every key).
LOADER = """
import importlib.util, sys
def load(path):
    if "golden_module" in sys.modules:
        return sys.modules["golden_module"]
    spec = importlib.util.spec_from_file_location("golden_module", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["golden_module"] = module
    spec.loader.exec_module(module)
    return module
"""


def load_golden() -> types.ModuleType:
    namespace: dict[str, object] = {"importlib": importlib}
    exec(LOADER, namespace)
    module = namespace["load"](str(HERE / "golden_module.py"))  # type: ignore[operator]
    assert isinstance(module, types.ModuleType)
    return module


def test_golden_keys_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(tmp_path))
    assert load_golden().golden_keys() == GOLDEN


def test_golden_table_is_sane() -> None:
    assert all(len(key) == 32 and int(key, 16) >= 0 for key in GOLDEN.values())
    assert GOLDEN["complete-default"] == GOLDEN["complete-by-name"]  # defaults applied
    others = [v for name, v in GOLDEN.items() if name != "complete-by-name"]
    assert len(set(others)) == len(others)


@pytest.mark.parametrize("hashseed", ["0", "4242"])
def test_golden_keys_in_other_processes(hashseed: str, tmp_path: Path) -> None:
    script = LOADER + f"import json\nprint(json.dumps(load({str(HERE / 'golden_module.py')!r}).golden_keys()))\n"
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "MEMOLLM_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == GOLDEN
