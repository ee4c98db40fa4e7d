"""Alembic migrations, shipped inside the package so `qocr db upgrade` works from any directory."""
