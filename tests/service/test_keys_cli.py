"""``labelagent keys create|list|revoke`` and the operator key of the first ``labelagent serve``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.cli import main
from service.serve import bootstrap_key
from service.store import SqlStore
from service.store.db import make_engine


def test_keys_create_list_revoke(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    assert main(["keys", "create", "--role", "reviewer", "--project", "a", "--project", "b", "--name", "ann",
                 "--db", db]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[-1]
    prefix = key[3:15]
    assert out[0] == f"created reviewer key {prefix} (ann) for a, b; it is shown only now:"
    assert main(["keys", "list", "--db", db]) == 0
    listed = capsys.readouterr().out
    assert prefix in listed and "active" in listed and "projects=a,b" in listed and key not in listed
    assert main(["keys", "revoke", prefix, "--db", db]) == 0
    assert capsys.readouterr().out.strip() == f"revoked key {prefix} (ann)"
    engine = make_engine(db)
    try:
        assert SqlStore(engine).projects.authenticate(key) is None
    finally:
        engine.dispose()
    assert main(["keys", "revoke", "ffffffffffff", "--db", db]) == 2
    assert "API key 'ffffffffffff' does not exist" in capsys.readouterr().err


def test_first_serve_creates_one_operator_key(store: SqlStore) -> None:
    key = bootstrap_key(store)
    assert key is not None
    record = store.projects.authenticate(key)
    assert record is not None and (record.role, record.projects) == ("operator", None)
    assert bootstrap_key(store) is None  # never again: the key was shown once


def test_the_command_line_loads_the_agent_only_for_the_commands_that_run_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``labelagent --help`` and ``keys list`` start without importing the agent, its graph library or the tools
    (seconds of imports on a small machine); ``replay`` still finds everything it needs."""
    probe = ("import sys, service.cli as cli\n"
             "heavy = [m for m in ('langgraph', 'agent.graph', 'tools.registry', 'sklearn') if m in sys.modules]\n"
             "assert not heavy, heavy\n"
             f"assert cli.main(['keys', 'list', '--db', 'sqlite:///{tmp_path / 'k.db'}']) == 0\n"
             "assert 'langgraph' not in sys.modules, 'keys list imported the agent'\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
