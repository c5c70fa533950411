"""a project's dataset names unique ignoring case (a database index; duplicates renamed first)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 12:25:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    datasets = sa.table("datasets", sa.column("id", sa.Integer), sa.column("project_id", sa.Integer),
                        sa.column("name", sa.String))
    rows = bind.execute(sa.select(datasets.c.id, datasets.c.project_id, datasets.c.name)
                        .order_by(datasets.c.project_id, datasets.c.id)).all()
    # every name stays where it is unique; a later duplicate gets the first free "name_N"
    taken: dict[int, set[str]] = {}
    for _, project_id, name in rows:
        taken.setdefault(project_id, set()).add(name.casefold())
    first: set[tuple[int, str]] = set()
    for id_, project_id, name in rows:
        if (project_id, name.casefold()) not in first:
            first.add((project_id, name.casefold()))
            continue
        names, n = taken[project_id], 2
        while f"{name}_{n}".casefold() in names:
            n += 1
        names.add(f"{name}_{n}".casefold())
        bind.execute(datasets.update().where(datasets.c.id == id_).values(name=f"{name}_{n}"))
    op.create_index("ux_datasets_project_name", "datasets", ["project_id", sa.text("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index("ux_datasets_project_name", table_name="datasets")
