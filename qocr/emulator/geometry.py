"""Text boxes in the shapes ``advanced_recognition`` answers with (``words_info``).

``location``: ``[x1, y1, x2, y2, x3, y3, x4, y4]``, integers, clockwise from the top-left
corner. ``rotate_rect``: ``[center_x, center_y, width, height, angle]`` with the angle of the
top edge against the horizontal, in degrees within [-90, 90].
"""

from __future__ import annotations

import math
from typing import Any

from qocr.emulator.recognition import Quad, TextLine


def location(box: Quad) -> list[int]:
    return [round(coordinate) for point in box for coordinate in point]


def rotate_rect(box: Quad) -> list[int]:
    (x1, y1), (x2, y2), (x3, y3), (x4, y4) = box
    cx = (x1 + x2 + x3 + x4) / 4
    cy = (y1 + y2 + y3 + y4) / 4
    width = (math.dist((x1, y1), (x2, y2)) + math.dist((x4, y4), (x3, y3))) / 2
    height = (math.dist((x1, y1), (x4, y4)) + math.dist((x2, y2), (x3, y3))) / 2
    angle = math.degrees(math.atan2(y2 - y1, x2 - x1))
    # The same rectangle seen from its other long side: keep the angle within [-90, 90].
    if angle > 90:
        angle -= 180
    elif angle < -90:
        angle += 180
    return [round(cx), round(cy), round(width), round(height), round(angle)]


def words_info(lines: list[TextLine]) -> list[dict[str, Any]]:
    return [
        {"rotate_rect": rotate_rect(line.box), "location": location(line.box), "text": line.text}
        for line in lines
    ]
