"""The layout's promises: the import-linter contracts in pyproject.toml hold, no module takes part
in an import cycle, and the wheel built from the tree is a working ``trailwatch`` (the rest of the
suite imports from the checkout and would pass with a broken wheel)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, build_wheel

PACKAGES = ("setup", "setup/wiring", "setup/verify", "setup/cli", "setup/demo",
            "handlers", "handlers/detection", "handlers/sinks")


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    r = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "5 kept" in r.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


class _Graph:
    def __init__(self, edges: dict[str, set[str]]) -> None:
        self.edges = edges
        self.modules = set(edges) | {m for targets in edges.values() for m in targets}

    def find_modules_directly_imported_by(self, module: str) -> set[str]:
        return self.edges.get(module, set())


def test_cycle_finder_finds_a_cycle():
    graph = _Graph({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles(_Graph({"a": {"b"}, "b": {"c"}})) == []


def test_no_import_cycles_function_level_imports_included():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("setup", "handlers", include_external_packages=False)
    assert {m.split(".")[0] for m in graph.modules} == {"setup", "handlers"}
    assert _cycles(graph) == []


def test_every_package_folder_is_a_package_listed_in_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    for pkg in PACKAGES:
        assert (ROOT / pkg / "__init__.py").is_file(), pkg
        assert f'"{pkg.replace("/", ".")}"' in text, pkg
    on_disk = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "setup").rglob("__init__.py")}
    on_disk |= {str(p.parent.relative_to(ROOT)) for p in (ROOT / "handlers").rglob("__init__.py")}
    assert on_disk == set(PACKAGES)


@pytest.mark.parametrize("command", [[], ["plan"], ["subscribe"], ["rules"], ["rules", "backtest"],
                                     ["replay"], ["demo"]])
def test_help_works_without_docstrings(command):
    """``python -OO`` strips docstrings: no help text may depend on them."""
    r = subprocess.run([sys.executable, "-OO", "-m", "setup.cli", *command, "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "usage: trailwatch" in r.stdout


@pytest.mark.slow
def test_wheel_installs_a_working_trailwatch(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in PACKAGES:
        assert f"{pkg}/__init__.py" in names, pkg
    for data in ("handlers/detection/pack.json", "handlers/detection/cis_cases.json",
                 "handlers/alert-schema-v2.json", "setup/cli/__main__.py",
                 "setup/demo/data/records.json", "setup/demo/data/routing-examples.json"):
        assert data in names, data
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    r = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AWS_"))}
    work = tmp_path / "elsewhere"          # not the checkout: the installed code must stand alone
    work.mkdir()
    tw = shutil.which("trailwatch", path=str(bin_dir))
    assert tw is not None
    r = subprocess.run([tw, "--help"], cwd=work, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "plan" in r.stdout and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run([tw, "rules", "list"], cwd=work, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cis-4.3" in r.stdout and "tw-" in r.stdout       # CIS controls and the pack load
    r = subprocess.run([str(bin_dir / "python"), "-c",
                        "import setup, handlers.processor as p; print(setup.__file__, p.__file__)"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and str(ROOT) not in r.stdout, r.stdout + r.stderr
