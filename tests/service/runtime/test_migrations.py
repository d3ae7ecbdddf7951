"""Alembic: upgrading an empty database yields the schema of ``SQLModel.metadata`` (every registered table), so a
model change without a migration fails here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from service.store.db import create_all, make_engine
from service.store.migrate import alembic_config, current_revision, ensure_schema, head_revision, model_tables, upgrade
from tests.conftest import require_postgres


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    """A database with no tables at all (unlike the ``engine`` fixture, which runs create_all)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
        yield engine
        engine.dispose()
        return
    url = require_postgres()
    schema = f"m_{uuid.uuid4().hex[:16]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
                         .render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def downgrade(engine: Engine, revision: str) -> None:
    """``alembic downgrade REVISION`` on ``engine`` (what an operator rolling back a release runs)."""
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _schema(engine: Engine) -> dict[str, object]:
    """Tables, columns (type class, nullability), indexes, unique, check and foreign-key constraints by name."""
    insp = inspect(engine)
    out: dict[str, object] = {}
    for table in sorted(set(insp.get_table_names()) - {"alembic_version"}):
        out[table] = {
            "columns": {c["name"]: (type(c["type"]).__name__, c["nullable"]) for c in insp.get_columns(table)},
            "indexes": sorted((i["name"], tuple(str(c) for c in i["column_names"]), bool(i["unique"]))
                              for i in insp.get_indexes(table)),
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
            "checks": sorted(c["name"] for c in insp.get_check_constraints(table) if c["name"]),
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"]) for f in insp.get_foreign_keys(table)),
        }
    return out


def test_upgrade_of_an_empty_database_matches_the_models(empty_engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert upgrade(empty_engine) == head_revision()
    tables = set(inspect(empty_engine).get_table_names()) - {"alembic_version"}
    assert tables == model_tables() == set(SQLModel.metadata.tables), "a table without a migration (or vice versa)"
    insp = inspect(empty_engine)
    for name, table in SQLModel.metadata.tables.items():
        columns = {c["name"]: c for c in insp.get_columns(name)}
        assert set(columns) == set(table.columns.keys()), f"columns of {name} differ from the model"
        for col in table.columns:
            assert columns[col.name]["nullable"] == col.nullable, f"{name}.{col.name}: nullability differs"
    with empty_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert diffs == [], f"the migrations and the models differ: {diffs}"

    # the same schema as create_all builds on this backend (indexes, constraints and column types included)
    reference = make_engine(f"sqlite:///{tmp_path / 'reference.db'}") if empty_engine.dialect.name == "sqlite" \
        else None
    if reference is not None:
        create_all(reference)
        assert _schema(empty_engine) == _schema(reference)
        reference.dispose()


def test_ensure_schema_creates_adopts_and_reports_current(empty_engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert ensure_schema(empty_engine) == "created"
    assert ensure_schema(empty_engine) == "current"
    assert current_revision(empty_engine) == head_revision()
    if empty_engine.dialect.name == "sqlite":
        legacy = make_engine(f"sqlite:///{tmp_path / 'legacy.db'}")
        create_all(legacy)
        assert ensure_schema(legacy) == "adopted"
        assert current_revision(legacy) == head_revision()
        legacy.dispose()


def test_0005_moves_item_images_out_of_the_item_row_and_back(empty_engine: Engine) -> None:
    assert upgrade(empty_engine, "0004_item_error") == "0004_item_error"
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO project (id, name, data_kind, item_seq, created_at) "
                          "VALUES (1, 'p', 'image', 2, CURRENT_TIMESTAMP)"))
        for id_, image in ((1, b"\x89PNG bytes"), (2, None)):
            conn.execute(text("INSERT INTO item (id, project_id, external_id, meta, image, status, attempts, seq, "
                              "created_at, updated_at) VALUES (:id, 1, :key, '{}', :image, 'pending', 0, :id, "
                              "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"id": id_, "key": f"k{id_}", "image": image})
    assert upgrade(empty_engine) == head_revision()
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT item_id, project_id, data, thumbnail FROM item_image")).all() == [
            (1, 1, b"\x89PNG bytes", None)]
    assert "image" not in {c["name"] for c in inspect(empty_engine).get_columns("item")}
    downgrade(empty_engine, "0004_item_error")
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT id, image FROM item ORDER BY id")).all() == [(1, b"\x89PNG bytes"), (2, None)]
    assert "item_image" not in inspect(empty_engine).get_table_names()


def test_0006_adds_the_backtest_table_and_takes_it_back(empty_engine: Engine) -> None:
    assert upgrade(empty_engine, "0005_item_images") == "0005_item_images"
    assert "backtest" not in inspect(empty_engine).get_table_names()
    assert upgrade(empty_engine, "0006_backtests") == "0006_backtests"
    assert "backtest" in inspect(empty_engine).get_table_names()
    downgrade(empty_engine, "0005_item_images")
    assert "backtest" not in inspect(empty_engine).get_table_names()
    assert current_revision(empty_engine) == "0005_item_images"


def test_0007_adds_the_label_correction_table_and_takes_it_back(empty_engine: Engine) -> None:
    assert upgrade(empty_engine, "0006_backtests") == "0006_backtests"
    assert "label_correction" not in inspect(empty_engine).get_table_names()
    assert upgrade(empty_engine, "0007_label_corrections") == "0007_label_corrections"
    insp = inspect(empty_engine)
    assert "label_correction" in insp.get_table_names()
    assert [u["name"] for u in insp.get_unique_constraints("label_correction")] == ["uq_label_correction_label"]
    downgrade(empty_engine, "0006_backtests")
    assert "label_correction" not in inspect(empty_engine).get_table_names()
    assert current_revision(empty_engine) == "0006_backtests"


def test_0008_adds_the_label_studio_annotation_table_and_takes_it_back(empty_engine: Engine) -> None:
    assert upgrade(empty_engine, "0007_label_corrections") == "0007_label_corrections"
    assert "ls_annotation" not in inspect(empty_engine).get_table_names()
    assert upgrade(empty_engine, "0008_label_studio_annotations") == "0008_label_studio_annotations"
    insp = inspect(empty_engine)
    assert "ls_annotation" in insp.get_table_names()
    assert [u["name"] for u in insp.get_unique_constraints("ls_annotation")] == ["uq_ls_annotation_item_annotation"]
    downgrade(empty_engine, "0007_label_corrections")
    assert "ls_annotation" not in inspect(empty_engine).get_table_names()
    assert current_revision(empty_engine) == "0007_label_corrections"
