"""``python -m qocr``: the same as the ``qocr`` command."""

from qocr.cli import main

main()
