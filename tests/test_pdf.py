"""PDF rendering (``jvlm.processing.pdf``), the one renderer behind ``jvlm infer`` and the
playground, and the command line's use of it (``jvlm.inference.documents``).

PDFs are written by Pillow, one page per image at a chosen resolution, so a page's size in
points (and therefore its rendered size) is known exactly.
"""

from __future__ import annotations

import base64
import io
import sys

import pytest
from PIL import Image, ImageDraw

from jvlm.errors import InvalidImageError, JVLMError
from jvlm.inference.documents import expand_bytes, expand_document
from jvlm.processing.pdf import (
    PDFError,
    PDFLimits,
    PDFSupportMissingError,
    PDFTooLargeError,
    is_pdf,
    page_scale,
    parse_pages,
    render_pdf,
)


def pdf_bytes(pages: list[tuple[int, int]], resolution: float = 72.0) -> bytes:
    """A PDF with one page per (width, height) in pixels; at 72 dpi a pixel is one point."""
    images = [Image.new("RGB", size, (255, 255, 255)) for size in pages]
    for k, im in enumerate(images):
        ImageDraw.Draw(im).rectangle([10, 10, 10 + 20 * (k + 1), 40], fill=(0, 0, 0))
    buf = io.BytesIO()
    images[0].save(buf, format="PDF", save_all=True, append_images=images[1:], resolution=resolution)
    return buf.getvalue()


# ----------------------------------------------------------------------------- rendering

def test_pdf_pages_render_within_the_pixel_budget():
    limits = PDFLimits(dpi=144, max_page_pixels=500_000)
    data = pdf_bytes([(612, 792), (200, 100)])  # US Letter, then a small label
    out = render_pdf(data, limits)
    assert out.n_pages == 2 and out.next_page is None
    letter, label = out.pages
    assert letter.width * letter.height <= 500_000  # 144 dpi would be 1224 x 1584
    assert letter.width / letter.height == pytest.approx(612 / 792, rel=0.01)
    assert (label.width, label.height) == (400, 200)  # small pages get the full 144 dpi
    decoded = Image.open(io.BytesIO(base64.b64decode(label.data_url().split(",", 1)[1])))
    assert decoded.format == "PNG" and decoded.size == (400, 200)


def test_pdf_page_cap_reports_where_rendering_stopped():
    data = pdf_bytes([(100, 100)] * 5)
    first = render_pdf(data, PDFLimits(max_pages=2))
    assert [p.index for p in first.pages] == [0, 1] and first.next_page == 2 and first.n_pages == 5
    rest = render_pdf(data, PDFLimits(max_pages=8), first_page=2)
    assert [p.index for p in rest.pages] == [2, 3, 4] and rest.next_page is None


def test_pdf_errors_are_typed():
    with pytest.raises(PDFError, match="not a PDF"):
        render_pdf(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(PDFError, match="could not be opened"):
        render_pdf(b"%PDF-1.7\n" + b"garbage" * 50)
    with pytest.raises(PDFTooLargeError, match="above the limit of"):
        render_pdf(pdf_bytes([(100, 100)]), PDFLimits(max_bytes=100))
    assert page_scale(72, 72, PDFLimits(dpi=72)) == 1.0


def test_a_page_selection_renders_exactly_those_pages_in_order():
    data = pdf_bytes([(100, 100), (120, 100), (140, 100), (160, 100)])
    out = render_pdf(data, pages="4,1-2")
    assert [p.index for p in out.pages] == [3, 0, 1]
    assert [p.width for p in out.pages] == [320, 200, 240]  # each page's own size, at 144 dpi
    assert out.next_page is None  # a selection is never cut short


def test_a_selection_above_the_page_cap_is_refused_not_truncated():
    data = pdf_bytes([(100, 100)] * 4)
    with pytest.raises(PDFTooLargeError, match="selects 3 pages .* limit of 2"):
        render_pdf(data, PDFLimits(max_pages=2), pages="1-3")
    with pytest.raises(ValueError, match="not both"):
        render_pdf(data, first_page=1, pages="1")


def test_a_header_after_leading_junk_is_still_a_pdf():
    """Mail gateways prepend bytes; PDFium reads such files, so the header check must too."""
    data = b"X" * 600 + pdf_bytes([(100, 100)])
    assert is_pdf(data) and not is_pdf(b"X" * 1100 + pdf_bytes([(100, 100)]))
    assert render_pdf(data).n_pages == 1


def test_missing_pypdfium2_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # makes `import pypdfium2` fail
    with pytest.raises(PDFSupportMissingError, match=r"\.venv/bin/pip install -e '\.\[pdf\]'") as info:
        render_pdf(pdf_bytes([(100, 100)]), name="report.pdf")
    assert "report.pdf" in str(info.value) and info.value.code == "pdf_unsupported"


# ----------------------------------------------------------------------------- page ranges

def test_parse_pages_reads_ranges_one_based_and_keeps_each_page_once():
    assert parse_pages("1-3,5", 6) == [0, 1, 2, 4]
    assert parse_pages("3, 1-3", 6) == [2, 0, 1]  # order as typed, page 3 once
    assert parse_pages(None, 3) == parse_pages("all", 3) == parse_pages(" ", 3) == [0, 1, 2]


@pytest.mark.parametrize(("spec", "message"), [
    ("x", "'x' is not a page number"),
    ("0", "increasing page numbers from 1"),
    ("3-2", "increasing page numbers from 1"),
    ("2-4", "asks for page 4, but the PDF has 3 pages"),
])
def test_parse_pages_errors_name_the_bad_part(spec, message):
    with pytest.raises(PDFError, match=message) as info:
        parse_pages(spec, 3)
    assert isinstance(info.value, JVLMError)  # the CLI prints it as one line


# ----------------------------------------------------------------------------- the CLI's use

def test_cli_reads_every_page_of_a_long_pdf(tmp_path):
    """The server caps pages at 8 by default; the user's own file on the command line is not."""
    path = tmp_path / "long.pdf"
    path.write_bytes(pdf_bytes([(100, 100)] * 10))
    items = expand_document(path)
    assert [page for page, _ in items] == list(range(1, 11))
    assert all(Image.open(io.BytesIO(png)).size == (200, 200) for _, png in items)
    assert [page for page, _ in expand_document(path, "2,9-10")] == [2, 9, 10]


def test_cli_pages_keep_the_pixel_cap():
    """A poster-sized page (5000 x 4000 points) would be 100 Mpx at 144 dpi."""
    [(page, png)] = expand_bytes(pdf_bytes([(500, 400)], resolution=7.2), name="poster.pdf")
    w, h = Image.open(io.BytesIO(png)).size
    assert page == 1 and w * h <= PDFLimits().max_page_pixels and w / h == pytest.approx(1.25, rel=0.01)


def test_cli_passes_non_pdf_bytes_through_and_names_missing_paths(tmp_path):
    assert expand_bytes(b"\x89PNG\r\n\x1a\nrest", "1-2") == [(None, b"\x89PNG\r\n\x1a\nrest")]
    with pytest.raises(InvalidImageError, match="does not exist"):
        expand_document(tmp_path / "nope.pdf")
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.7\n" + b"garbage" * 50)
    with pytest.raises(PDFError, match=r"bad\.pdf could not be opened"):
        expand_document(tmp_path / "bad.pdf")
