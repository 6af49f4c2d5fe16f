"""The Lambda artifact is reproducible (issue 14): a pip-tools lock with hashes for every runtime
dependency, one version source of truth (pyproject.toml), installed with hash checking, and a
build that reads only what the function needs. Observed before: `>=`-only requirements, no lock,
Powertools bounds differing between pyproject.toml and handlers/requirements.txt, and
`make sam-build` copying .venv and .venv-sam (about 850 MB) on every build."""

from __future__ import annotations

import importlib.util
import marshal
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from setup import package
from setup.package import (REQUIREMENTS, REQUIREMENTS_IN, build_artifact, canonical_name,
                           find_interpreter, lambda_packages, lock_inputs, major_minor,
                           size_bytes)
from tests.conftest import ROOT

SAM = ROOT / ".venv-sam" / "bin" / "sam"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def parse_lock(text: str) -> dict[str, tuple[str, list[str], list[str]]]:
    """name -> (version, hashes, via) from a pip-compile output."""
    out: dict[str, tuple[str, list[str], list[str]]] = {}
    current = None
    for line in text.splitlines():
        m = PIN.match(line)
        if m:
            current = canonical_name(m.group(1))
            out[current] = (m.group(2), [], [])
        elif current and "--hash=sha256:" in line:
            out[current][1].append(line.split("--hash=sha256:")[1].split()[0])
        elif current and line.strip().startswith("# via"):
            out[current][2].append(line.strip())
        elif line.strip() and not line.startswith((" ", "#")):
            raise AssertionError(f"unpinned line in the lock: {line!r}")
    return out


def pyproject_deps() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {canonical_name(Requirement(d).name): Requirement(d) for d in deps}


def test_lock_pins_every_package_with_hashes():
    lock = parse_lock(REQUIREMENTS.read_text())
    assert lock, "handlers/requirements.txt has no pinned package"
    for name, (version, hashes, _) in lock.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name
    assert "make lock" in REQUIREMENTS.read_text()[:400]    # the refresh command is named
    assert set(lambda_packages()) <= set(lock)
    assert not {"boto3", "botocore", "s3transfer"} & set(lock)   # the runtime provides the SDK


def test_one_version_source_for_shared_dependencies():
    """requirements.in names packages only; pyproject.toml holds their bounds, and the lock's
    pins satisfy them."""
    deps = pyproject_deps()
    lock = parse_lock(REQUIREMENTS.read_text())
    for name in lambda_packages():
        assert name in deps, name
        assert deps[name].specifier.contains(lock[name][0]), (name, lock[name][0])
    assert [canonical_name(Requirement(r).name) for r in lock_inputs()] == lambda_packages()


def test_requirements_in_refuses_versions(tmp_path):
    bad = tmp_path / "requirements.in"
    bad.write_text("orjson>=3.9\n")
    with pytest.raises(package.LockError, match="pyproject.toml"):
        lambda_packages(bad)
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["orjson>=3.9"]\n')
    bad.write_text("orjson\nnot-declared\n")
    with pytest.raises(package.LockError, match="not-declared"):
        lock_inputs(tmp_path / "pyproject.toml", bad)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("artifact") / "task")


@pytest.mark.slow
def test_artifact_contents_and_size(built):
    lock = parse_lock(REQUIREMENTS.read_text())
    names = {p.name for p in built.iterdir()}
    code = {n for n in names if not n.endswith(".dist-info")}
    assert code == {"handlers", "aws_lambda_powertools", "jmespath", "orjson",
                    "typing_extensions.py", "zlib_ng", "__pycache__"}   # typing_extensions' .pyc
    # exactly the locked versions, nothing else installed
    dists = {canonical_name(n[:-len(".dist-info")].rsplit("-", 1)[0]):
             n[:-len(".dist-info")].rsplit("-", 1)[1] for n in names if n.endswith(".dist-info")}
    assert dists == {n: v for n, (v, _, _) in lock.items()}
    shipped = sorted(str(p.relative_to(built / "handlers")) for p in (built / "handlers").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    expected = sorted(str(p.relative_to(ROOT / "handlers")) for p in (ROOT / "handlers").rglob("*")
                      if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts)
    assert shipped == expected
    assert "detection/pack.json" in shipped and "sinks/sns.py" in shipped     # the subpackages
    # the only caches are the build's own bytecode: one .pyc per source, for this interpreter
    pycs = {p for c in built.rglob("__pycache__") for p in c.iterdir()}
    assert pycs == {pyc_of(p) for p in built.rglob("*.py")}
    assert not (built / "bin").exists()
    assert 1_000_000 < size_bytes(built) < 15_000_000


def pyc_of(source: Path) -> Path:
    """Where the artifact's bytecode for source is (not importlib.util.cache_from_source, which
    follows a PYTHONPYCACHEPREFIX the test run may have)."""
    return source.parent / "__pycache__" / f"{source.stem}.{sys.implementation.cache_tag}.pyc"


@pytest.mark.slow
@pytest.mark.parametrize("module", ["handlers/processor.py", "aws_lambda_powertools/__init__.py",
                                    "orjson/__init__.py", "typing_extensions.py"])
def test_artifact_ships_unchecked_hash_bytecode(built, module):
    """/var/task is read-only: without shipped bytecode each cold start compiles every module.
    unchecked-hash: header flags 0b01 (hash-based, source never checked), so the .pyc depends on
    the source bytes only, never on mtimes."""
    source = built / module
    data = pyc_of(source).read_bytes()
    assert data[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(data[4:8], "little") == 0b01
    assert data[8:16] == importlib.util.source_hash(source.read_bytes())
    # compiled as Lambda's path, not the build directory's (builds anywhere are identical)
    assert marshal.loads(data[16:]).co_filename == f"/var/task/{module}"


@pytest.mark.slow
def test_two_builds_have_identical_bytecode(built, tmp_path):
    again = build_artifact(tmp_path / "elsewhere" / "task")

    def pycs(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("__pycache__/*.pyc")}
    first, second = pycs(built), pycs(again)
    assert len(first) > 300 and first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


@pytest.mark.slow
def test_build_without_an_interpreter_of_the_target_version_ships_no_bytecode(tmp_path, capsys):
    asked = []

    def nothing(version: str) -> None:
        asked.append(version)
        return None
    task = build_artifact(tmp_path / "task", python_version="3.13", find=nothing)
    assert asked == ["3.13"]
    assert (task / "handlers" / "processor.py").is_file()
    assert not list(task.rglob("__pycache__")) and not list(task.rglob("*.pyc"))
    warning = [line for line in capsys.readouterr().err.splitlines() if "python3.13" in line]
    assert len(warning) == 1 and warning[0].startswith("warning:"), warning
    assert "compiles every module from source" in warning[0] and "install python3.13" in warning[0]


def test_bytecode_interpreter_lookup(monkeypatch, tmp_path):
    here = major_minor(None)
    assert here == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert major_minor("3.13") == major_minor("313") == major_minor("3.13.2") == "3.13"
    assert find_interpreter(here) == sys.executable
    # pythonX.Y on PATH is run to check its version: a shim that fails (pyenv with the version
    # not selected) or answers another version does not count
    monkeypatch.setattr(package.shutil, "which", lambda name: sys.executable)
    assert find_interpreter("3.99") is None
    monkeypatch.setattr(package.shutil, "which", lambda name: "/bin/false")
    assert find_interpreter("3.99") is None
    monkeypatch.setattr(package.shutil, "which", lambda name: None)
    assert find_interpreter("3.99") is None
    # a pyenv install of the version (how .ci/py313 finds the Lambda runtime's Python too)
    fake = tmp_path / "versions" / "3.99.1" / "bin" / "python3.99"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 3.99\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    assert find_interpreter("3.99") == str(fake)
    assert find_interpreter("3.98") is None
    # building for another version than the running one: pythonX.Y on PATH, once it answers X.Y
    monkeypatch.setattr(package, "major_minor", lambda version: "0.0")
    monkeypatch.setattr(package.shutil, "which",
                        lambda name: sys.executable if name == f"python{here}" else None)
    assert find_interpreter(here) == sys.executable


@pytest.mark.slow
@pytest.mark.parametrize("tamper", ["hash", "no-hashes"])
def test_build_refuses_a_tampered_or_unhashed_lock(tmp_path, tamper):
    text = REQUIREMENTS.read_text()
    if tamper == "hash":
        # every orjson hash replaced: whichever wheel pip picks, its sha256 is not in the lock
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("orjson=="))
        for i in range(start + 1, len(lines)):
            if "--hash=sha256:" not in lines[i]:
                break
            lines[i] = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, lines[i])
        text = "\n".join(lines) + "\n"
    else:
        text = "".join(f"{n}=={v}\n" for n, (v, _, _) in parse_lock(text).items())
    lock = tmp_path / "requirements.txt"
    lock.write_text(text)
    with pytest.raises(subprocess.CalledProcessError):
        build_artifact(tmp_path / "task", requirements=lock)


@pytest.mark.slow
@pytest.mark.skipif(not SAM.exists(), reason="SAM CLI not installed (make sam-venv)")
def test_sam_build_reads_only_the_source(tmp_path):
    """`make sam-build` must not copy the tree: a named pipe in .venv (standing in for the
    virtualenvs) makes any copy fail, so the build passes only if SAM builds in source."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    files += ["LICENSE", "handlers/requirements.in", "handlers/requirements.txt"]
    src = tmp_path / "src"
    for rel in set(files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    (src / ".venv").mkdir()
    os.mkfifo(src / ".venv" / "trap")
    samvenv = SAM.parent.parent
    (samvenv / ".installed").exists() or pytest.skip("SAM virtualenv not stamped")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    out = subprocess.run(["make", "sam-build", f"SAMVENV={samvenv}"], cwd=src, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    fn = src / ".aws-sam" / "build" / "ProcessorFunction"
    assert {"handlers", "orjson", "aws_lambda_powertools"} <= {p.name for p in fn.iterdir()}
    assert not (fn / ".venv").exists() and not (fn / "setup").exists()
    # built for the template's platform: arm64 wheels
    assert any("aarch64" in p.name for p in (fn / "orjson").glob("*.so"))


def test_bytecode_does_not_depend_on_the_callers_environment(tmp_path, monkeypatch):
    """Found by review: PYTHONNODEBUGRANGES (and any other PYTHON* variable of the caller's)
    reached the compiler; it drops column positions, so the same source gave other .pyc bytes."""
    def build(root):
        (root / "pkg").mkdir(parents=True)
        (root / "pkg" / "mod.py").write_text("def f(a, b):\n    return a.x + b[0] * 2\n")
        assert package.compile_bytecode(root) is not None
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("__pycache__/*.pyc")}

    monkeypatch.delenv("PYTHONNODEBUGRANGES", raising=False)
    plain = build(tmp_path / "a")
    monkeypatch.setenv("PYTHONNODEBUGRANGES", "1")
    monkeypatch.setenv("PYTHONWARNINGS", "error")
    other = build(tmp_path / "b")
    assert plain and plain == other
