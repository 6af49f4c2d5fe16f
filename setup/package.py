"""Build the Lambda artifact: the ``handlers`` package plus its runtime requirements, nothing else.

``sam build`` calls this through the Makefile (``build-ProcessorFunction``, BuildMethod makefile)
for the function's platform (arm64, the template's Python runtime). Tests call the same function
for the local interpreter and run the result under awslambdaric with only the artifact on
``sys.path``, which is how import mistakes that work from the repo root are caught.

    python -m setup.package DEST [--platform manylinux2014_aarch64 --python-version 3.13]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "handlers"
REQUIREMENTS = HANDLERS / "requirements.txt"
KEEP_SUFFIXES = (".py", ".json")


def copy_handlers(dest: Path) -> None:
    target = dest / "handlers"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(HANDLERS.iterdir()):
        if path.is_file() and path.suffix in KEEP_SUFFIXES:
            shutil.copy2(path, target / path.name)


def install_requirements(dest: Path, platform: str | None, python_version: str | None) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-compile", "--target", str(dest), "-r", str(REQUIREMENTS)]
    if platform:
        cmd += ["--platform", platform, "--only-binary=:all:", "--implementation", "cp"]
        if python_version:
            cmd += ["--python-version", python_version]
    subprocess.run(cmd, check=True)


def prune(dest: Path) -> None:
    """Drop what Lambda never imports: caches, tests, type stubs, boto3 if a dependency pulled it."""
    for pattern in ("**/__pycache__", "**/tests", "boto3", "botocore", "s3transfer"):
        for path in dest.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
    for path in dest.glob("**/*.pyi"):
        path.unlink()


def build_artifact(dest: Path, platform: str | None = None,
                   python_version: str | None = None) -> Path:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    install_requirements(dest, platform, python_version)
    copy_handlers(dest)
    prune(dest)
    return dest


def size_bytes(dest: Path) -> int:
    return sum(p.stat().st_size for p in Path(dest).rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--platform", help="e.g. manylinux2014_aarch64 for arm64 Lambda")
    ap.add_argument("--python-version", help="e.g. 3.13 (the template's runtime)")
    args = ap.parse_args(argv)
    dest = build_artifact(args.dest, args.platform, args.python_version)
    print(f"artifact {dest}: {size_bytes(dest) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
