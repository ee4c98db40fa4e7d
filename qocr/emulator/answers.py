"""What the model "says": recognized lines rendered in the form the task or prompt asks for.

Built-in tasks (native API): ``text_recognition`` and ``multi_lan`` plain text;
``key_information_extraction`` a fenced JSON block plus ``ocr_result.kv_result``;
``document_parsing`` fenced LaTeX; ``table_parsing`` a fenced HTML table;
``formula_recognition`` LaTeX between ``$$``; ``advanced_recognition`` plain text plus
``ocr_result.words_info``.

Without a task the prompt decides, as far as we can recognise it: a prompt asking for text
coordinates (rotated rectangles, bounding boxes) gets the ``words_info`` list as fenced JSON;
one that mentions JSON gets a fenced JSON object (with the keys of the prompt's JSON example
or schema, when it has one); HTML gets a table; a formula gets LaTeX math; LaTeX gets a LaTeX
document; an equation (without LaTeX) LaTeX math; anything else plain text.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from qocr.emulator import kie
from qocr.emulator.geometry import words_info
from qocr.emulator.recognition import TextLine, group_rows
from qocr.qwen.tasks import DEFAULT_PROMPT, Task, task_prompt

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


@dataclass(frozen=True)
class Answer:
    """The model's output text, and the structured result of KIE / advanced recognition."""

    text: str
    ocr_result: dict[str, Any] | None = None


# The answer to a call without an image: Qwen-OCR reads images, and says so.
TEXT_ONLY_REPLY = "There is no image in the request, so there is no text to recognize."


def text_only_answer() -> Answer:
    """The answer to a text-only call (the reference allows one; there is nothing to read)."""
    return Answer(TEXT_ONLY_REPLY)


def input_prompt(task: str | None, prompt: str | None, schema: Mapping[str, Any] | None) -> str:
    """The text the model reads besides the image (what ``text_tokens`` counts)."""
    if task is not None:
        # The built-in task's own prompt replaces the user's text (Alibaba's guide).
        return task_prompt(cast(Task, task), dict(schema) if schema else None)
    return prompt if prompt else DEFAULT_PROMPT


def answer(
    lines: list[TextLine],
    *,
    task: str | None,
    prompt: str | None,
    schema: Mapping[str, Any] | None = None,
) -> Answer:
    """The answer to a built-in ``task``, or to ``prompt`` when there is no task."""
    texts = [line.text for line in lines]
    if task in ("text_recognition", "multi_lan"):
        return Answer(plain(texts))
    if task == "key_information_extraction":
        kv = kie.fill_schema(schema, texts) if schema else kie.labelled_pairs(texts)
        return Answer(fenced_json(kv), {"kv_result": kv})
    if task == "document_parsing":
        return Answer(latex_document(texts))
    if task == "table_parsing":
        return Answer(html_table(lines))
    if task == "formula_recognition":
        return Answer(latex_formula(texts))
    if task == "advanced_recognition":
        return Answer(plain(texts), {"words_info": words_info(lines)})
    return Answer(_for_prompt(prompt or DEFAULT_PROMPT, lines))


def _for_prompt(prompt: str, lines: list[TextLine]) -> str:
    texts = [line.text for line in lines]
    lowered = prompt.lower()
    if re.search(r"coordinat|rotated rectangle|bounding box", lowered):
        return fenced_json(words_info(lines))
    if "json" in lowered:
        schema = kie.prompt_schema(prompt)
        return fenced_json(kie.fill_schema(schema, texts) if schema else kie.labelled_pairs(texts))
    if "html" in lowered:
        return html_table(lines)
    if "formula" in lowered:
        return latex_formula(texts)
    if "latex" in lowered:
        return latex_document(texts)
    if "equation" in lowered:
        return latex_formula(texts)
    return plain(texts)


def plain(texts: list[str]) -> str:
    return "\n".join(texts)


def fenced_json(value: object) -> str:
    # Four-space indentation, as in the seed's sample answers.
    return "```json\n" + json.dumps(value, ensure_ascii=False, indent=4) + "\n```"


def escape_latex(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def latex_document(texts: list[str]) -> str:
    body = "\n\n".join(escape_latex(t) for t in texts)
    return (
        "```latex\n\\documentclass{article}\n\\begin{document}\n\n"
        + body
        + "\n\n\\end{document}\n```"
    )


def latex_formula(texts: list[str]) -> str:
    return "$$\n" + " \\\\\n".join(texts) + "\n$$"


def html_table(lines: list[TextLine]) -> str:
    rows = []
    for row in group_rows(lines):
        cells = "".join(f"\n    <td>{html.escape(line.text)}</td>" for line in row)
        rows.append(f"\n  <tr>{cells}\n  </tr>")
    return "```html\n<table>" + "".join(rows) + "\n</table>\n```"
