"""Execution: all of Celery (app, tasks, queues, publisher, beat), and the story of one item."""
