"""The search index: the words of each note, written by a job after the note's commit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "note_word",
        sa.Column(
            "note_id",
            Id,
            sa.ForeignKey("note.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("word", sa.String(64), primary_key=True),
    )
    op.create_index("note_word_by_word", "note_word", ["word"])


def downgrade() -> None:
    op.drop_index("note_word_by_word", table_name="note_word")
    op.drop_table("note_word")
