"""Turning sources into batches, dispatching their items, and scheduled runs (no Celery)."""
