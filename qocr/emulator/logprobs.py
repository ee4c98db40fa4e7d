"""Token log probabilities for ``logprobs: true``, in the shape the seed documents.

One entry per output token (the emulator's tokens, :mod:`qocr.emulator.textunits`):
``{"token", "bytes" (its UTF-8 bytes), "logprob", "top_logprobs"}``, ``top_logprobs``
holding ``top_logprobs`` alternatives, the token itself first. The values are made up but
deterministic: a function of the token alone, in [-0.25, 0], alternatives lower.
"""

from __future__ import annotations

import hashlib
from typing import Any

from qocr.emulator.textunits import split_tokens

# Stand-ins for the tokens the model nearly chose.
_ALTERNATIVES = (" the", "-", " ", "0", "1", ".", ",", "e", " of", ":")


def _logprob(token: str) -> float:
    digest = hashlib.sha256(token.encode("utf-8")).digest()
    return -round(int.from_bytes(digest[:2], "big") / 65535 / 4, 4)


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "bytes": list(token.encode("utf-8")), "logprob": logprob}


def token_logprobs(text: str, top_logprobs: int) -> list[dict[str, Any]]:
    """The ``logprobs.content`` list of ``text``."""
    content = []
    for token in split_tokens(text):
        chosen = _logprob(token)
        others = [alt for alt in _ALTERNATIVES if alt != token][: max(top_logprobs - 1, 0)]
        top = [_entry(token, chosen)] if top_logprobs else []
        top += [_entry(alt, round(chosen - 1.5 * (i + 1), 4)) for i, alt in enumerate(others)]
        content.append({**_entry(token, chosen), "top_logprobs": top})
    return content


def logprobs_body(content: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """A choice's ``logprobs`` field: null when not asked for."""
    return None if content is None else {"content": content}
