"""The layout README.md describes: packages import downward only, and the window process stays light."""
from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import REPO_ROOT

# What each package may import of the project: what is below it. `app` is the top (the loop and the CLI);
# `visualizer` shows pictures with no model code under it; `common` is the bottom.
BELOW = {
    "common": set(),
    "models": {"common"},
    "visualizer": {"common"},
    "inference_server": {"models", "common"},
    "offline": {"models", "visualizer", "common"},
    "app": {"offline", "inference_server", "visualizer", "models", "common"},
}


def imports(path) -> set[str]:
    """The top-level modules a module imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def project_imports(path) -> set[str]:
    return imports(path) & set(BELOW)


def test_packages_import_downward_only():
    upward = {f"{path.relative_to(REPO_ROOT)} imports {sorted(found - BELOW[package] - {package})}"
              for package in BELOW for path in (REPO_ROOT / package).rglob("*.py")
              if (found := project_imports(path)) - BELOW[package] - {package}}
    assert not upward


def test_only_the_cli_parses_command_lines():
    # Library modules expose functions; every flag lives in app/cli.py (benchmarks/ are scripts of their own).
    parsers = {str(path.relative_to(REPO_ROOT)) for package in BELOW for path in (REPO_ROOT / package).rglob("*.py")
               if "argparse" in imports(path)}
    assert parsers == {"app/cli.py"}


def test_the_window_process_loads_no_torch_and_no_server_code():
    # The window must start (and keep showing pictures) without the model code's torch, and play the demo
    # recordings without librosa's decoders or audioread (seconds before the first picture). From models it may take
    # plain-Python modules only (the class names).
    probe = ("import sys, app.run; from app.capture import FileSource, RingBuffer; "
             "FileSource(RingBuffer(), 'app/demo_audio'); "
             "print(sorted(m for m in ('torch', 'librosa', 'audioread', 'numba', 'inference_server') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_common_needs_nothing_heavy():
    probe = ("import sys, common.protocol, common.paths, common.sound; "
             "print(sorted(m for m in ('torch', 'pygame', 'moderngl', 'app', 'models', 'visualizer', "
             "'inference_server') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]"
