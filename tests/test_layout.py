"""The layout the docs promise: imports go one way, and every reference points somewhere.

Entry points (`app/cli.py`, `app/roles/`, `app/tools/`) may import anything; a role
package (`ws_gateway`, `topic_server`) imports the kernel and never the other role; the
kernel (the rest of `app/`) imports no role and no entry point.
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT

ENTRY = ("app.cli", "app.__main__", "app.roles", "app.tools")
ROLES = ("ws_gateway", "topic_server")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> list[Path]:
    return sorted(path for package in ("app", *ROLES) for path in (ROOT / package).rglob("*.py"))


def pages() -> list[Path]:
    """What the pages are made of: HTML, and every file under a `static` folder."""
    return sorted(
        path
        for package in ("app", *ROLES)
        for path in (ROOT / package).rglob("*")
        if path.is_file() and (path.suffix == ".html" or "static" in path.relative_to(ROOT).parts)
    )


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_one_way(path: Path) -> None:
    module = module_name(path)
    names = imported(path)
    if within(module, ENTRY):
        return
    if within(module, ROLES):
        own = module.split(".")[0]
        forbidden = (*ENTRY, *(role for role in ROLES if role != own))
    else:
        forbidden = (*ENTRY, *ROLES)
    assert not [name for name in names if within(name, forbidden)], module


def test_app_keeps_few_loose_modules() -> None:
    assert len(list((ROOT / "app").glob("*.py"))) <= 12


def test_the_packaged_ring_is_the_documented_one() -> None:
    assert (ROOT / "app" / "ring.toml").read_bytes() == (ROOT / "ring.toml").read_bytes()


DOTTED = re.compile(r"`((?:app|ws_gateway|topic_server)(?:\.\w+)+)")
FILE = re.compile(r"\b((?:app|ws_gateway|topic_server|tests|docs|bench)/[\w./-]*\w)")


def resolves(dotted: str) -> bool:
    """A module, or an attribute of one (`app.link.hub.LinkHub`)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


@pytest.mark.parametrize(
    "path",
    [*sources(), ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_references_point_at_what_exists(path: Path) -> None:
    text = path.read_text()
    missing = [name for name in DOTTED.findall(text) if not resolves(name)]
    missing += [name for name in FILE.findall(text) if not (ROOT / name).exists()]
    assert not missing, f"{path.relative_to(ROOT)} refers to {missing}"


def test_the_wheel_ships_every_module_and_data_file(tmp_path: Path) -> None:
    """What `pip install .` (and so the Docker image) installs: the whole product."""
    build = ROOT / "build"
    existed = build.exists()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    if not existed:  # setuptools builds in the checkout: leave it as it was
        shutil.rmtree(build, ignore_errors=True)
    [wheel] = tmp_path.glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(path.relative_to(ROOT)) for path in sources()}
    expected |= {"app/ring.toml", "ws_gateway/access/channels.toml"}
    expected |= {str(path.relative_to(ROOT)) for path in pages()}
    assert "ws_gateway/demo/static/vendor/phoenix-1.8.16/LICENSE.md" in expected
    assert expected - shipped == set()
    assert not [name for name in shipped if name.startswith("tests/")]
