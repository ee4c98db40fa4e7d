"""The request options of `qocr submit` / `qocr run`, from the command line to RecognizeOptions."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from qocr.cli import cli
from qocr.cli.batch_options import build_request
from qocr.qwen.errors import OptionsError
from qocr.settings import Settings

SETTINGS = Settings(model="qwen-vl-ocr-latest", api="compatible", s3_mode="inline")


def params(**given: Any) -> dict[str, Any]:
    return {"sources": ("scan.png",), "stop": (), **given}


def test_sampling_options_become_request_options() -> None:
    request = build_request(
        SETTINGS,
        params(
            top_p=0.5,
            top_k=3,
            repetition_penalty=1.1,
            presence_penalty=0.5,
            seed=7,
            stop=("</s>", "END"),
        ),
    )
    options = request.options
    assert (options.top_p, options.top_k, options.seed, options.stop) == (
        0.5,
        3,
        7,
        ("</s>", "END"),
    )
    assert (options.repetition_penalty, options.presence_penalty) == (1.1, 0.5)
    assert options.temperature is None
    unset = build_request(SETTINGS, params()).options
    assert unset.fingerprint() != options.fingerprint()
    assert "seed" not in unset.to_dict() and "stop" not in unset.to_dict()


def test_max_tokens_over_the_models_maximum_is_refused_unless_granted() -> None:
    with pytest.raises(OptionsError, match="over qwen-vl-ocr's maximum of 4096"):
        build_request(SETTINGS, params(model="qwen-vl-ocr", max_tokens=8192))
    granted = Settings(model="qwen-vl-ocr-latest", granted_max_tokens=8192)
    options = build_request(granted, params(model="qwen-vl-ocr", max_tokens=8192)).options
    assert options.max_tokens == 8192 and options.granted_max_tokens == 8192


@pytest.mark.parametrize("command", ["submit", "run"])
def test_help_shows_the_references_ranges_and_advice(command: str) -> None:
    text = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
    for fragment in (
        "--temperature FLOAT Sampling temperature in [0, 2) (default 0.01)",
        "--top-p FLOAT Nucleus sampling threshold in (0, 1] (default 0.001)",
        "--top-k INTEGER Candidates sampled from, >= 0 (default 1; over 100: off)",
        "--repetition-penalty FLOAT Penalty on repeated sequences, > 0 (default 1.0: none)",
        "--presence-penalty FLOAT Penalty on tokens already present, in [-2, 2]",
        "--seed INTEGER Random seed in [0, 2^31-1]",
        "--stop TEXT Stop generating where this string appears",
        "4096 for qwen-vl-ocr and its dated snapshots",
    ):
        assert fragment in text, fragment
    assert text.count("The reference recommends the default.") == 6
