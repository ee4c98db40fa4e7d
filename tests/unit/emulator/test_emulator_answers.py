"""Each built-in task, and prompt-driven answers, rendered from known lines."""

from __future__ import annotations

import json
import re

import pytest

from qocr.emulator import kie
from qocr.emulator.answers import answer, escape_latex, input_prompt
from qocr.emulator.recognition import Quad, TextLine
from qocr.qwen.tasks import DEFAULT_PROMPT, PROMPTS, task_prompt


def line(text: str, x: float, y: float, w: float = 200, h: float = 30) -> TextLine:
    box: Quad = ((x, y), (x + w, y), (x + w, y + h), (x, y + h))
    return TextLine(text, box)


LINES = [
    line("Invoice Number: 12345", 20, 20),
    line("Seller Name", 20, 70),
    line("ACME & Sons", 20, 120),
    line("Total 99.50 $", 20, 170),
]
TABLE = [
    line("Item", 20, 20, 80),
    line("Price", 300, 22, 80),
    line("Pen", 20, 70, 80),
    line("1.50", 300, 68, 80),
]


def _json_block(text: str) -> object:
    match = re.fullmatch(r"```json\n(.*)\n```", text, re.S)
    assert match is not None, text
    return json.loads(match.group(1))


@pytest.mark.parametrize("task", ["text_recognition", "multi_lan"])
def test_plain_text_tasks(task: str) -> None:
    result = answer(LINES, task=task, prompt=None)
    assert result.text == "Invoice Number: 12345\nSeller Name\nACME & Sons\nTotal 99.50 $"
    assert result.ocr_result is None


def test_kie_fills_the_schema_and_repeats_it_as_json() -> None:
    schema = {
        "Invoice Number": "digits",
        "seller_name": "",
        "total": "amount",
        "Buyer": {"Tax ID": ""},
    }
    result = answer(LINES, task="key_information_extraction", prompt=None, schema=schema)
    expected = {
        "Invoice Number": "12345",
        "seller_name": "ACME & Sons",  # the label stands alone: the value is the next line
        "total": "99.50 $",
        "Buyer": {"Tax ID": "null"},  # not in the image: "null", like the real model
    }
    assert result.ocr_result == {"kv_result": expected}
    assert _json_block(result.text) == expected
    assert '\n    "Invoice Number": "12345"' in result.text  # 4-space indent, as the seed


def test_kie_without_schema_lists_labelled_pairs() -> None:
    result = answer(LINES, task="key_information_extraction", prompt=None)
    assert result.ocr_result == {"kv_result": {"Invoice Number": "12345"}}


def test_kie_list_schema_is_filled_once() -> None:
    schema = {"items": [{"Total": ""}]}
    result = answer(LINES, task="key_information_extraction", prompt=None, schema=schema)
    assert result.ocr_result == {"kv_result": {"items": [{"Total": "99.50 $"}]}}


def test_document_parsing_is_fenced_latex() -> None:
    text = answer(LINES, task="document_parsing", prompt=None).text
    assert text.startswith("```latex\n\\documentclass{article}\n\\begin{document}")
    assert text.endswith("\\end{document}\n```")
    assert "ACME \\& Sons" in text and "99.50 \\$" in text


def test_table_parsing_is_a_fenced_html_table_with_rows() -> None:
    text = answer(TABLE, task="table_parsing", prompt=None).text
    assert text.startswith("```html\n<table>") and text.endswith("</table>\n```")
    rows = re.findall(r"<tr>(.*?)</tr>", text, re.S)
    assert [re.findall(r"<td>(.*?)</td>", r) for r in rows] == [["Item", "Price"], ["Pen", "1.50"]]


def test_table_cells_are_escaped() -> None:
    assert "<td>ACME &amp; Sons</td>" in answer(LINES, task="table_parsing", prompt=None).text


def test_formula_recognition_is_latex_math() -> None:
    text = answer([line("x^2 + y^2 = z^2", 0, 0)], task="formula_recognition", prompt=None).text
    assert text == "$$\nx^2 + y^2 = z^2\n$$"


def test_advanced_recognition_has_words_info() -> None:
    result = answer(LINES[:1], task="advanced_recognition", prompt=None)
    assert result.text == "Invoice Number: 12345"
    assert result.ocr_result == {
        "words_info": [
            {
                "rotate_rect": [120, 35, 200, 30, 0],
                "location": [20, 20, 220, 20, 220, 50, 20, 50],
                "text": "Invoice Number: 12345",
            }
        ]
    }


SEED_TICKET_PROMPT = (
    "Please extract the invoice number, train number, departure station ... Return the data in "
    "JSON format as follows: {'invoice_number': 'xxx', 'departure_station': 'xxx', "
    "'ticket_price':'xxx'},"
)


def test_prompt_asking_for_json_with_keys_gets_those_keys() -> None:
    result = answer(LINES, task=None, prompt=SEED_TICKET_PROMPT)
    assert _json_block(result.text) == {
        "invoice_number": "12345",
        "departure_station": "null",
        "ticket_price": "null",
    }
    assert result.ocr_result is None


@pytest.mark.parametrize(
    ("prompt", "prefix"),
    [
        ("Output the content as JSON", "```json"),
        ("Locate all text lines and return the coordinates of the rotated rectangle", "```json"),
        ("Convert the table to HTML", "```html"),
        ("Transcribe the document to LaTeX", "```latex"),
        ("Recognize the formula in LaTeX", "$$"),
        (None, "Invoice Number: 12345\n"),
        ("What does it say?", "Invoice Number: 12345\n"),
    ],
)
def test_prompt_decides_the_form(prompt: str | None, prefix: str) -> None:
    assert answer(LINES, task=None, prompt=prompt).text.startswith(prefix)


def test_input_prompt() -> None:
    assert input_prompt(None, None, None) == DEFAULT_PROMPT
    assert input_prompt(None, "Read it", None) == "Read it"
    assert input_prompt("table_parsing", "ignored", None) == PROMPTS["table_parsing"]
    kie_prompt = input_prompt("key_information_extraction", None, {"Ride Date": "YYYY-MM-DD"})
    assert kie_prompt.endswith('{"Ride Date": "YYYY-MM-DD"}')


@pytest.mark.parametrize(
    ("key", "lines", "value"),
    [
        ("invoice_number", ["INVOICE NUMBER 42"], "42"),
        ("Invoice Code", ["x", "Invoice code：A-7"], "A-7"),
        ("date", ["Update 3", "Date - 2025-03-05"], "2025-03-05"),  # whole words only
        ("price", ["Total"], "null"),
        ("", ["a"], "null"),
    ],
)
def test_find_value(key: str, lines: list[str], value: str) -> None:
    assert kie.find_value(key, lines) == value


def test_task_prompts_sent_through_the_compatible_api() -> None:
    schema = {"Invoice Number": "", "Seller": {"Name": ""}}
    kie_prompt = task_prompt("key_information_extraction", schema)
    result = answer(LINES, task=None, prompt=kie_prompt)
    assert _json_block(result.text) == {
        "Invoice Number": "12345",
        "Seller": {"Name": "ACME & Sons"},
    }
    words = _json_block(answer(LINES[:1], task=None, prompt=PROMPTS["advanced_recognition"]).text)
    native = answer(LINES[:1], task="advanced_recognition", prompt=None).ocr_result
    assert native is not None and words == native["words_info"]
    table = answer(TABLE, task=None, prompt=PROMPTS["table_parsing"]).text
    assert table == answer(TABLE, task="table_parsing", prompt=None).text
    document = answer(LINES, task=None, prompt=PROMPTS["document_parsing"]).text
    assert document == answer(LINES, task="document_parsing", prompt=None).text
    formula = answer(LINES, task=None, prompt=PROMPTS["formula_recognition"]).text
    assert formula == answer(LINES, task="formula_recognition", prompt=None).text
    plain = answer(LINES, task=None, prompt=PROMPTS["text_recognition"]).text
    assert plain == answer(LINES, task="text_recognition", prompt=None).text


def test_prompt_keys_and_pairs() -> None:
    assert kie.prompt_keys('as {"a": 1, \'b c\': "x"} and {"a": 2, "d":3}') == ["a", "b c", "d"]
    assert kie.prompt_keys("no braces here: 'a': 1") == []
    assert kie.labelled_pairs(["A: 1", "B：2", "no pair", "A: 3"]) == {"A": "1", "B": "2"}
    assert kie.prompt_schema('Fill {"a": {"b": ""}} as json') == {"a": {"b": ""}}
    assert kie.prompt_schema("as {'x': 'xxx', 'y':'z'}") == {"x": "", "y": ""}
    assert kie.prompt_schema("no schema {} here") is None


def test_escape_latex() -> None:
    assert escape_latex("50% of $x_1 & {y}") == r"50\% of \$x\_1 \& \{y\}"
