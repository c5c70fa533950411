"""The store's migrations: from the first schema to the newest on a store that holds data."""

from __future__ import annotations

import pytest
import sqlalchemy as sa


def test_dataset_names_made_unique_keep_every_dataset(tmp_path):
    from alembic import command

    from custseg.web.store import Store

    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    config = store.alembic_config()
    command.upgrade(config, "0001")
    with store.engine.begin() as con:
        con.execute(sa.text("INSERT INTO projects (id, name, description, preview_mode, preview_rows, created_at, "
                            "last_activity_at) VALUES (1, 'p', '', 'first', 50, '2026-01-01', '2026-01-01'), "
                            "(2, 'q', '', 'first', 50, '2026-01-01', '2026-01-01')"))
        for id_, project, name in [(1, 1, "sales"), (2, 1, "Sales"), (3, 1, "sales_2"), (4, 1, "SALES"), (5, 2, "sales")]:
            con.execute(sa.text("INSERT INTO datasets (id, project_id, name, origin, filename, path, table_path, "
                                "size_bytes, source, mapping, summary, created_at) VALUES (:id, :p, :n, 'upload', '', "
                                "'', '', 0, '{}', '{}', '{}', '2026-01-01')"), {"id": id_, "p": project, "n": name})
    store.migrate()
    with store.engine.connect() as con:
        names = dict(con.execute(sa.text("SELECT id, name FROM datasets ORDER BY id")).all())
    assert names == {1: "sales", 2: "Sales_3", 3: "sales_2", 4: "SALES_4", 5: "sales"}
    with store.engine.begin() as con, pytest.raises(sa.exc.IntegrityError):
        con.execute(sa.text("UPDATE datasets SET name = 'SALES_2' WHERE id = 1"))
    store.dispose()
