"""Alembic environment of the feedback store (serving.feedback): run programmatically by `FeedbackStore.migrate`,
which passes its connection in `config.attributes["connection"]`; no alembic.ini."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
