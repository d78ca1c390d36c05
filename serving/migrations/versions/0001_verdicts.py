"""verdicts: moderators' verdicts on served decisions (POST /feedback)

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verdicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("decision_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("decision", sa.Text, nullable=False),  # the verified payload (JSON): model, scores, thresholds
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("text_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("labels", sa.Text, nullable=False),  # JSON {policy: true | false | "unsure"}
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("text", sa.Text, nullable=True),  # only when its sha256 matched the decision's
        sa.Column("usable_for_training", sa.Boolean, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("verdicts")
