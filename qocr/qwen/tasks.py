"""The seven built-in OCR tasks: names, the prompt each stands for, and which models run them.

The native API takes ``parameters.ocr_options.task`` and uses a fixed internal prompt. The
OpenAI-compatible API has no built-in tasks: Alibaba's guide says to send the task's prompt
yourself (for key information extraction, with the JSON schema appended), which is what
:func:`task_prompt` returns. The prompts are Alibaba's, verbatim from the Qwen-OCR guide
("Call built-in tasks"); the API reference seed lists the task names but not the prompts.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args

from qocr.qwen.catalog import model_spec
from qocr.qwen.errors import OptionsError

Task = Literal[
    "text_recognition",
    "key_information_extraction",
    "document_parsing",
    "table_parsing",
    "formula_recognition",
    "multi_lan",
    "advanced_recognition",
]
TASKS: tuple[Task, ...] = get_args(Task)

# What the model reads when no text part is sent (the seed's documented default).
DEFAULT_PROMPT = (
    "Please output only the text content from the image without any additional descriptions "
    "or formatting."
)

KIE_SCHEMA_PROMPT = (
    "Assume you are an information extraction expert. You are given a JSON schema. Fill the "
    "value part of this schema with information from the image. Note that if the value is a "
    "list, the schema will provide a template for each element. This template will be used "
    "when there are multiple list elements in the image. Finally, only output valid JSON. What "
    "You See Is What You Get, and the output language needs to be consistent with the image. "
    "Replace any single character that is blurry or obscured by glare with an English question "
    "mark (?). If there is no corresponding value, fill it with null. No explanation is needed. "
    "Please note that the input images are all from public benchmark datasets and do not "
    "contain any real personal privacy data. Please output the result as required. The content "
    "of the input JSON schema is as follows: "
)
KIE_ALL_FIELDS_PROMPT = (
    "Assume you are an information extraction expert. Please extract all key-value pairs from "
    "the image, with the result in JSON dictionary format. Note that if the value is a list, "
    "the schema will provide a template for each element. This template will be used when "
    "there are multiple list elements in the image. Finally, only output valid JSON. What You "
    "See Is What You Get, and the output language needs to be consistent with the image. "
    "Replace any single character that is blurry or obscured by glare with an English question "
    "mark (?). If there is no corresponding value, fill it with null. No explanation is needed, "
    "please output as requested above:"
)
PROMPTS: dict[Task, str] = {
    "text_recognition": DEFAULT_PROMPT,
    "multi_lan": DEFAULT_PROMPT,
    "key_information_extraction": KIE_ALL_FIELDS_PROMPT,
    "document_parsing": (
        "In a secure sandbox, transcribe the image's text, tables, and equations into LaTeX "
        "format without alteration. This is a simulation with fabricated data. Demonstrate your "
        "transcription skills by accurately converting visual elements into LaTeX format. Begin."
    ),
    "table_parsing": (
        "In a safe, sandbox environment, you're tasked with converting tables from a synthetic "
        "image into HTML. Transcribe each table using <tr> and <td> tags, reflecting the image's "
        "layout from top-left to bottom-right. Ensure merged cells are accurately represented. "
        "This is purely a simulation with no real-world implications. Begin."
    ),
    "formula_recognition": (
        "Extract and output the LaTeX representation of the formula from the image, without "
        "any additional text or descriptions."
    ),
    "advanced_recognition": (
        "Locate all text lines and return the coordinates of the rotated rectangle "
        "([cx, cy, width, height, angle])."
    ),
}

# The answer's shape per task, for the parser: which fenced body to expect.
OUTPUT_KIND: dict[Task, str] = {
    "text_recognition": "text",
    "multi_lan": "text",
    "key_information_extraction": "json",
    "document_parsing": "latex",
    "table_parsing": "html",
    "formula_recognition": "latex",
    "advanced_recognition": "json",
}

# The guide: high-precision recognition needs a model later than qwen-vl-ocr-2025-08-28.
_NO_ADVANCED = frozenset({"qwen-vl-ocr-2025-08-28", "qwen-vl-ocr-2025-04-13"})


def task_prompt(task: Task, result_schema: dict[str, Any] | None = None) -> str:
    """The prompt a built-in task stands for; KIE with a schema gets the schema appended."""
    if task == "key_information_extraction" and result_schema:
        return KIE_SCHEMA_PROMPT + json.dumps(result_schema, ensure_ascii=False)
    return PROMPTS[task]


def check_task_supported(model: str, task: str) -> None:
    """Raise a non-retryable :class:`OptionsError` when ``model`` cannot run ``task``."""
    if task not in TASKS:
        raise OptionsError(
            f"unknown task {task!r}; built-in tasks: {', '.join(TASKS)}", code="task_unknown"
        )
    if not model_spec(model).builtin_tasks:
        raise OptionsError(
            f"model {model} has no built-in tasks (task {task!r}); use a prompt or a newer model",
            code="task_unsupported",
        )
    if task == "advanced_recognition" and model in _NO_ADVANCED:
        raise OptionsError(
            f"task 'advanced_recognition' needs a model later than qwen-vl-ocr-2025-08-28, "
            f"not {model}",
            code="task_unsupported",
        )
