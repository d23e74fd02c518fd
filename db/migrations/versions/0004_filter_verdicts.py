"""Filter verdicts per filter job: every filter job keeps its own verdicts, passed and selected of each path.

Back-fill: the path rows carried the verdicts of one filter job per sample job, the one its summary names
(``summary["filter_job"]``); those become that filter job's rows, so an old workspace trains, exports and reports
as before. Older filter jobs of the same sample job had their verdicts overwritten on the paths: they get no rows
(run their config's filter stage again to judge them anew). Decisions, answers and correctness stay on the paths.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BACKFILL = """
INSERT INTO filter_verdicts (filter_job_id, path_id, verdicts, passed, selected)
SELECT f.id, p.id, p.verdicts, p.passed, p.selected
FROM jobs AS s
JOIN jobs AS f ON f.id = CAST(json_extract(s.summary, '$.filter_job') AS INTEGER)
    AND f.kind = 'filter' AND f.parent_id = s.id
JOIN paths AS p ON p.job_id = s.id
WHERE s.kind = 'sample' AND p.source = 'self' AND p.passed IS NOT NULL
"""


def upgrade() -> None:
    op.create_table(
        "filter_verdicts",
        sa.Column("filter_job_id", sa.Integer(), nullable=False),
        sa.Column("path_id", sa.Integer(), nullable=False),
        sa.Column("verdicts", sa.JSON(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("selected", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["filter_job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["path_id"], ["paths.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("filter_job_id", "path_id"),
    )
    with op.batch_alter_table("filter_verdicts", schema=None) as batch_op:
        batch_op.create_index("ix_filter_verdicts_job_selected", ["filter_job_id", "selected", "path_id"], unique=False)
        batch_op.create_index("ix_filter_verdicts_job_passed", ["filter_job_id", "passed", "path_id"], unique=False)
        batch_op.create_index("ix_filter_verdicts_path", ["path_id"], unique=False)
    op.execute(BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table("filter_verdicts", schema=None) as batch_op:
        batch_op.drop_index("ix_filter_verdicts_path")
        batch_op.drop_index("ix_filter_verdicts_job_passed")
        batch_op.drop_index("ix_filter_verdicts_job_selected")
    op.drop_table("filter_verdicts")
