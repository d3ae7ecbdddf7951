"""The Docker image's build: the files the Dockerfile copies are enough to build the package, and the wheel
carries what the service needs at run time (migrations, web pages, example policies, the license, the demo's
dataset with its license)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dockerfile_copies() -> list[str]:
    """The sources of the Dockerfile's ``COPY`` instructions (relative to the build context)."""
    sources: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words and words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            sources.extend(words[1:-1])
    return sources


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built, as ``pip install .`` in the image does, from a context holding only what the Dockerfile
    copies (the ``.dockerignore`` patterns left out)."""
    context = tmp_path_factory.mktemp("context")
    ignored = shutil.ignore_patterns("__pycache__", "*.pyc", "*.db", "*.db-*")
    for source in dockerfile_copies():
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=ignored)
        else:
            shutil.copy2(src, context / source)
    out = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(context)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"pip wheel failed on the Dockerfile's context:\n{done.stdout}\n{done.stderr}"
    (built,) = out.glob("labelagent-*.whl")
    return built


def test_the_dockerfile_copies_every_package_and_file_the_build_names() -> None:
    copied = set(dockerfile_copies())
    assert {"agent", "tools", "policies", "service", "pyproject.toml", "README.md", "LICENSE"} <= copied


def test_the_wheel_carries_migrations_pages_policies_and_license(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    versions = {p.name for p in (ROOT / "service" / "store" / "migrations" / "versions").glob("0*.py")}
    assert versions, "no migration scripts in the repository"
    for name in versions:
        assert f"service/store/migrations/versions/{name}" in names
    assert "service/store/migrations/script.py.mako" in names
    for page in (ROOT / "service" / "api" / "web" / "static").iterdir():
        assert f"service/api/web/static/{page.name}" in names
    for policy in (ROOT / "policies" / "examples").glob("*.yaml"):
        assert f"policies/examples/{policy.name}" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {"service/offline/demo/data/sms_spam_demo.csv.gz", "service/offline/demo/data/LICENSE-sms_spam.txt"} <= names
    assert not any(n.startswith("tests/") or n.startswith("bench/") for n in names)


def test_the_installed_wheel_migrates_a_database(wheel: Path, tmp_path: Path) -> None:
    """``labelagent db upgrade`` from the wheel alone (its dependencies from this environment): the migration
    scripts are found inside the installed package, not in a source checkout."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    db = tmp_path / "image.db"
    env = {**os.environ, "PYTHONPATH": str(target), "LABELAGENT_DATABASE_URL": f"sqlite:///{db}"}
    where = subprocess.run([sys.executable, "-c", "import service; print(service.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert Path(where).is_relative_to(target), f"service imported from {where}, not from the wheel"
    done = subprocess.run([sys.executable, "-m", "service.cli", "db", "upgrade"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
        head = conn.execute("select version_num from alembic_version").fetchone()[0]
    assert {"item", "review_task", "backtest", "alembic_version"} <= tables
    latest = max(p.stem for p in (ROOT / "service" / "store" / "migrations" / "versions").glob("0*.py"))
    assert head == latest
    # `labelagent policy init` reads its templates from the installed package too
    init = subprocess.run([sys.executable, "-m", "service.cli", "policy", "init", "--labels", "a,b", "--lexical"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    assert "project: my-project" in init.stdout and "kind: text_classifier" in init.stdout


def test_the_installed_wheel_streams_the_demo_dataset_with_its_license(wheel: Path, tmp_path: Path) -> None:
    """The demo's rows and license come from the installed package alone (no checkout, no ../shared/data)."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import collections, service.offline.demo.dataset as d; rows = d.load_rows(); "
            "print(d.__file__); print(len(rows), len({r.key for r in rows}), "
            "sorted(collections.Counter(r.label for r in rows))); "
            "t = d.license_text(); print('Almeida' in t and 'Attribution 4.0 International' in t)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)},
                         capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    assert Path(out[0]).is_relative_to(target), f"imported from {out[0]}, not from the wheel"
    assert out[1:] == ["3000 3000 ['ham', 'spam']", "True"]
