"""Render the sample invoices in samples/ (committed; re-run to change them)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

INVOICES = [
    ("INV-2026-0001", "Acme Paper Co.", "2026-01-15", "1,250.00"),
    ("INV-2026-0002", "Blue River Foods", "2026-02-03", "318.40"),
    ("INV-2026-0003", "Northwind Tools", "2026-03-21", "4,075.99"),
]


def render(number: str, seller: str, date: str, total: str) -> Image.Image:
    image = Image.new("RGB", (900, 520), "white")
    draw = ImageDraw.Draw(image)
    title = ImageFont.load_default(size=44)
    body = ImageFont.load_default(size=32)
    draw.text((40, 30), "INVOICE", font=title, fill="black")
    lines = [f"Number: {number}", f"Seller: {seller}", f"Date: {date}", f"Total: USD {total}"]
    for row, line in enumerate(lines):
        draw.text((40, 130 + row * 80), line, font=body, fill="black")
    draw.rectangle((20, 20, 880, 500), outline="black", width=3)
    return image


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "samples"
    out.mkdir(exist_ok=True)
    for index, invoice in enumerate(INVOICES, start=1):
        render(*invoice).save(out / f"invoice-{index}.png", optimize=True)


if __name__ == "__main__":
    main()
