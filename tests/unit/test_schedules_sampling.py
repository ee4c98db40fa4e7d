"""Schedules take the sampling options and the max_tokens ceiling like `qocr submit` does."""

from __future__ import annotations

from pathlib import Path

import pytest

from qocr.scheduler.schedules import ScheduleBook, ScheduleConfigError, load_schedule_book
from qocr.settings import Settings

BASE = '[schedules.nightly]\nevery = "1h"\nsources = ["s3://scans/in/"]\n'


def book(tmp_path: Path, text: str, settings: Settings | None = None) -> ScheduleBook:
    path = tmp_path / "qocr.toml"
    path.write_text(text, encoding="utf-8")
    return load_schedule_book(path, settings or Settings(model="qwen-vl-ocr-latest"))


def options_of(tmp_path: Path, text: str, settings: Settings | None = None) -> dict[str, object]:
    schedules = book(tmp_path, text, settings).schedules
    return dict(schedules["nightly"].options.to_dict())


def test_sampling_keys_reach_the_request_and_its_fingerprint(tmp_path: Path) -> None:
    text = BASE + (
        "temperature = 0.2\ntop_k = 5\nrepetition_penalty = 1.05\npresence_penalty = -0.5\n"
        'seed = 42\nstop = ["</s>", "END"]\n'
    )
    options = options_of(tmp_path, text)
    assert {k: options[k] for k in ("temperature", "top_k", "seed", "stop")} == {
        "temperature": 0.2,
        "top_k": 5,
        "seed": 42,
        "stop": ["</s>", "END"],
    }
    assert (options["repetition_penalty"], options["presence_penalty"]) == (1.05, -0.5)
    assert options_of(tmp_path, BASE + 'top_p = 0.5\nstop = "END"\n')["stop"] == "END"
    plain = book(tmp_path, BASE).schedules["nightly"].options
    seeded = book(tmp_path, BASE + "seed = 42\n").schedules["nightly"].options
    assert plain.fingerprint() != seeded.fingerprint()


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("temperature = 2.0", "temperature=2.0 is out of range"),
        ("top_p = 0", "top_p=0.0 is out of range"),
        ("temperature = 0.5\ntop_p = 0.5", "set temperature or top_p, not both"),
        ("seed = 2147483648", "seed=2147483648 is out of range"),
        ("presence_penalty = 3", "presence_penalty=3.0 is out of range"),
        ("stop = [1, 'a']", "stop.list[str].0: Input should be a valid string"),
        ('model = "qwen-vl-ocr"\nmax_tokens = 8192', "over qwen-vl-ocr's maximum of 4096"),
    ],
)
def test_out_of_range_values_name_the_schedule(tmp_path: Path, line: str, words: str) -> None:
    with pytest.raises(ScheduleConfigError) as caught:
        book(tmp_path, BASE + line + "\n")
    assert "schedule 'nightly'" in caught.value.message and words in caught.value.message


def test_a_granted_ceiling_lets_a_schedule_ask_for_more(tmp_path: Path) -> None:
    text = BASE + 'model = "qwen-vl-ocr"\nmax_tokens = 8192\n'
    granted = Settings(model="qwen-vl-ocr-latest", granted_max_tokens=8192)
    assert options_of(tmp_path, text, granted)["max_tokens"] == 8192
