"""Execution: the Celery app, its task, and the story of one item."""
