"""Accounts and their notes.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: 64-bit ids on PostgreSQL; SQLite's rowid (must be spelled INTEGER) is 64-bit already.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", Id, primary_key=True),
        sa.Column("username", sa.Text(), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column(
            "joined_at", sa.DateTime(), nullable=False, server_default=sa.func.current_timestamp()
        ),
    )
    op.create_table(
        "note",
        sa.Column("id", Id, primary_key=True),
        sa.Column(
            "owner_id",
            Id,
            sa.ForeignKey("account.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False, server_default=""),
        sa.Column(
            "created_at", sa.DateTime(), nullable=False, server_default=sa.func.current_timestamp()
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("note_by_owner", "note", ["owner_id", "id"])


def downgrade() -> None:
    op.drop_index("note_by_owner", table_name="note")
    op.drop_table("note")
    op.drop_table("account")
