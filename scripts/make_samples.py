"""Render the sample invoices in samples/ (committed; re-run to change them): three one-page
PNGs and a two-page PDF whose total is on its second page."""

from __future__ import annotations

from datetime import UTC, datetime
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


# A two-page invoice: the header and first lines on page 1, the last lines and the total
# on page 2 (what results --by document merges into one record).
PDF_INVOICE = ("INV-2026-0004", "Harbor Freight Lines", "2026-04-09", "2,980.00")
PDF_LINES = [
    ("Container haulage, Rotterdam", "1,200.00"),
    ("Customs clearance", "380.00"),
    ("Port storage, 6 days", "540.00"),
    ("Insurance", "260.00"),
    ("Fuel surcharge", "600.00"),
]
# Fixed dates: the PDF comes out byte for byte the same on every run.
PDF_DATE = datetime(2026, 4, 9, tzinfo=UTC)


def render_pdf_pages(number: str, seller: str, date: str, total: str) -> list[Image.Image]:
    title = ImageFont.load_default(size=44)
    body = ImageFont.load_default(size=28)
    pages = []
    for page, lines in enumerate((PDF_LINES[:3], PDF_LINES[3:]), start=1):
        image = Image.new("RGB", (850, 1100), "white")  # a letter page at 100 dpi
        draw = ImageDraw.Draw(image)
        draw.text((50, 40), "INVOICE", font=title, fill="black")
        header = [f"Number: {number}", f"Seller: {seller}"]
        if page == 1:
            header.append(f"Date: {date}")
        for row, line in enumerate(header):
            draw.text((50, 130 + row * 60), line, font=body, fill="black")
        for row, (item, amount) in enumerate(lines):
            y = 400 + row * 60
            draw.text((50, y), item, font=body, fill="black")
            draw.text((620, y), amount, font=body, fill="black")
        if page == 2:
            draw.text((50, 700), f"Total: USD {total}", font=body, fill="black")
        draw.text((680, 1030), f"Page {page} of 2", font=body, fill="black")
        pages.append(image)
    return pages


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "samples"
    out.mkdir(exist_ok=True)
    for index, invoice in enumerate(INVOICES, start=1):
        render(*invoice).save(out / f"invoice-{index}.png", optimize=True)
    first, *rest = render_pdf_pages(*PDF_INVOICE)
    first.save(
        out / "invoice-4.pdf",
        save_all=True,
        append_images=rest,
        resolution=100,
        title=f"Invoice {PDF_INVOICE[0]}",
        creationDate=PDF_DATE.timetuple(),
        modDate=PDF_DATE.timetuple(),
    )


if __name__ == "__main__":
    main()
