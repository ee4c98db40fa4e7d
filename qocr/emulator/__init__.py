"""A faithful local emulator of Alibaba Cloud's Qwen-OCR service (both APIs, one root URL).

``qocr emulator`` runs it; :func:`qocr.emulator.testing.running_emulator` runs it inside a
test. See ``qocr/emulator/README.md`` for the endpoints, flags, limits and ``/_stats``.
"""

from qocr.emulator.config import EmulatorConfig

__all__ = ["EmulatorConfig"]
