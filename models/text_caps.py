"""Length caps applied to provider- and worker-supplied strings on their way into the store.

Their columns are TEXT, so nothing a provider sends fails to save; the caps keep rows and
``qocr show`` readable (a 5 MB error body is not worth storing) and keep every indexed
value far below PostgreSQL's btree entry limit (about 2.7 KB).
"""

from __future__ import annotations

from typing import overload

# Error codes, request ids, finish reasons, model names, worker names: they are tally keys
# (part of a primary key), and 512 characters stay under the btree limit even at 4 bytes
# a character.
CODE_MAX_CHARS = 512
# Error messages and stop reasons.
MESSAGE_MAX_CHARS = 4_000


@overload
def cap(value: str, max_chars: int) -> str: ...
@overload
def cap(value: None, max_chars: int) -> None: ...
@overload
def cap(value: str | None, max_chars: int) -> str | None: ...
def cap(value: str | None, max_chars: int) -> str | None:
    """``value`` cut to at most ``max_chars``, ending with a marker that says it was cut.

    Idempotent: a value already cut to ``max_chars`` comes back unchanged, so a code cut
    on an item and again as a tally key is the same string in both places.
    """
    if value is None or len(value) <= max_chars:
        return value
    marker = f"…[cut from {len(value)} chars]"
    return value[: max(max_chars - len(marker), 0)] + marker[:max_chars]
