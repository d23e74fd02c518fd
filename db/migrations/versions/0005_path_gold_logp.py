"""Path gold_logp: the student's log-likelihood of the gold answer sentence after the path (filters.select =
"gold_likelihood", LaTRO's self-reward); None where not scored.

Revision ID: 0005
Revises: 0003 (re-chained to 0004 when the per-filter-job verdicts table lands)
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("paths", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gold_logp", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("paths", schema=None) as batch_op:
        batch_op.drop_column("gold_logp")
