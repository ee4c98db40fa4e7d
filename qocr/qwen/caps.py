"""How much of a provider's answer the client keeps: bytes of a response, characters of a
message, characters of a code or id.

A hostile or broken provider can send a 40 MB body, a 5 MB error message or a 300-character
error code; none of that should reach storage or a terminal whole. The caps are far above
anything the documented protocol produces (an answer is at most 8,192 tokens, a request id
a UUID, a code a few dotted words).
"""

from __future__ import annotations

from typing import overload

# A whole answer, plain or streamed (decoded bytes). 8,192 output tokens with logprobs stay
# far below it.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
# The message of an error we raise (the provider's text, or ours around it).
MAX_MESSAGE_CHARS = 2_048
# Provider strings stored as they are: error codes, request ids, model names, finish reasons.
MAX_FIELD_CHARS = 200


@overload
def cap_chars(value: str, max_chars: int) -> str: ...
@overload
def cap_chars(value: None, max_chars: int) -> None: ...
def cap_chars(value: str | None, max_chars: int) -> str | None:
    """``value`` cut to at most ``max_chars``, ending with a marker that says it was cut.

    Idempotent: a value already within ``max_chars`` (a cut one included) is unchanged.
    """
    if value is None or len(value) <= max_chars:
        return value
    marker = f"…[cut from {len(value)} chars]"
    return value[: max(max_chars - len(marker), 0)] + marker[:max_chars]
