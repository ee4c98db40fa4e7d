"""The sampling options of ``qocr submit`` and ``qocr run``: the reference's ranges in --help.

The reference recommends keeping every default; these exist for the rare batch that needs
them. Values are checked by :class:`qocr.qwen.options.RecognizeOptions` (one set of rules for
the CLI, schedules and the library); they are part of the request fingerprint.
"""

from __future__ import annotations

from typing import Any

import click

_KEEP_DEFAULT = "The reference recommends the default."

SAMPLING_OPTIONS = [
    click.option(
        "--temperature",
        type=float,
        help=f"Sampling temperature in [0, 2) (default 0.01); not with --top-p. {_KEEP_DEFAULT}",
    ),
    click.option(
        "--top-p",
        type=float,
        help=f"Nucleus sampling threshold in (0, 1] (default 0.001); not with --temperature. "
        f"{_KEEP_DEFAULT}",
    ),
    click.option(
        "--top-k",
        type=int,
        help=f"Candidates sampled from, >= 0 (default 1; over 100: off). {_KEEP_DEFAULT}",
    ),
    click.option(
        "--repetition-penalty",
        type=float,
        help=f"Penalty on repeated sequences, > 0 (default 1.0: none). {_KEEP_DEFAULT}",
    ),
    click.option(
        "--presence-penalty",
        type=float,
        help=f"Penalty on tokens already present, in [-2, 2] (default 0.0). {_KEEP_DEFAULT}",
    ),
    click.option(
        "--seed",
        type=int,
        help=f"Random seed in [0, 2^31-1]: the same seed and options give the same answer. "
        f"{_KEEP_DEFAULT}",
    ),
    click.option(
        "--stop",
        multiple=True,
        help="Stop generating where this string appears (repeat for several).",
    ),
]

SAMPLING_NAMES = (
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "presence_penalty",
    "seed",
)


def sampling_values(params: dict[str, Any]) -> dict[str, Any]:
    """The RecognizeOptions keyword arguments of the sampling options given (unset: left out)."""
    values = {name: params[name] for name in SAMPLING_NAMES if params.get(name) is not None}
    if params.get("stop"):
        values["stop"] = tuple(params["stop"])
    return values
