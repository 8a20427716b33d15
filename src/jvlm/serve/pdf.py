"""PDF pages rendered to PNG images, so a document can be asked about like any picture.

The model reads pixels, not PDF objects: each page becomes one image of the conversation.
Rendering happens on the server (PDFium through ``pypdfium2``, the ``pdf`` extra) because a
browser cannot rasterise a PDF without a large script bundle, and the playground ships none.

Everything a hostile or merely huge file could blow up is capped before work is done: the
file's bytes, the number of pages rendered (the rest are reported, not silently dropped),
and every page's pixel count, which is reached by choosing the render scale from the page's
size in points rather than rendering first and shrinking after. The model resizes any input
to at most ``ImageProcessingConfig.max_pixels`` anyway, so the default page budget of twice
that keeps text legible without paying for pixels the model would discard.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import threading
from dataclasses import dataclass, field

from jvlm.errors import JVLMError

log = logging.getLogger(__name__)

#: PDFium keeps global state and is not thread-safe; one render at a time per process
_PDFIUM_LOCK = threading.Lock()
_POINTS_PER_INCH = 72.0


class PDFError(JVLMError, ValueError):
    """The upload is not a PDF we can render (not a PDF, corrupt, password-protected, empty)."""

    code = "invalid_pdf"


class PDFTooLargeError(PDFError):
    """The PDF file is larger than the server accepts."""

    code = "pdf_too_large"


class PDFSupportMissingError(JVLMError, RuntimeError):
    """The server was installed without the ``pdf`` extra (``pypdfium2``)."""

    code = "pdf_unsupported"


@dataclass(frozen=True)
class PDFLimits:
    """Caps on one rendering request; every field is a server setting, not a client choice."""

    max_bytes: int = 32 * 1024 * 1024
    max_pages: int = 8
    dpi: float = 144.0  # upper bound on resolution; small pages get this, big ones less
    max_page_pixels: int = 2_007_040  # 2 x ImageProcessingConfig.max_pixels


@dataclass(frozen=True)
class RenderedPage:
    index: int  # 0-based page number in the document
    width: int
    height: int
    png: bytes = field(repr=False)

    def data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class RenderedPDF:
    n_pages: int  # pages in the document
    pages: list[RenderedPage]  # consecutive pages, at most ``PDFLimits.max_pages``

    @property
    def next_page(self) -> int | None:
        """Index of the first page left out by the page cap, or None when none was."""
        after = self.pages[-1].index + 1
        return after if after < self.n_pages else None


def page_scale(width_pt: float, height_pt: float, limits: PDFLimits) -> float:
    """Render scale (pixels per point) for a page: ``dpi``, lowered to fit ``max_page_pixels``."""
    w, h = max(width_pt, 1.0), max(height_pt, 1.0)
    scale = limits.dpi / _POINTS_PER_INCH
    if w * h * scale * scale > limits.max_page_pixels:
        scale = math.sqrt(limits.max_page_pixels / (w * h))
    # PDFium rounds the bitmap up to whole pixels: shrink by a pixel of the long side until
    # the rounded size fits too (a few steps; bounded for absurd aspect ratios)
    for _ in range(10_000):
        if math.ceil(w * scale) * math.ceil(h * scale) <= limits.max_page_pixels:
            break
        scale -= 1.0 / max(w, h)
    return scale


def render_pdf(data: bytes, limits: PDFLimits = PDFLimits(), first_page: int = 0) -> RenderedPDF:
    """Render up to ``limits.max_pages`` pages, starting at ``first_page``, to PNG bytes.

    Raises ``PDFTooLargeError`` above ``limits.max_bytes``, ``PDFError`` for anything PDFium
    cannot open, and ``PDFSupportMissingError`` when ``pypdfium2`` is not installed.
    """
    if len(data) > limits.max_bytes:
        raise PDFTooLargeError(
            f"the PDF is {len(data) / 2**20:.1f} MiB, above this server's limit of "
            f"{limits.max_bytes / 2**20:.0f} MiB; split it or send the pages as images"
        )
    if b"%PDF-" not in data[:1024]:  # the header may follow up to 1 KiB of junk
        raise PDFError("the file is not a PDF (no '%PDF-' header); expected a PDF document")
    try:
        import pypdfium2 as pdfium
    except ImportError as e:
        raise PDFSupportMissingError(
            "this server cannot render PDFs: the 'pypdfium2' package is missing; install it with "
            "pip install 'jvlm[pdf]', or send the pages as images"
        ) from e

    with _PDFIUM_LOCK:
        try:
            doc = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as e:
            hint = " (password-protected PDFs are not supported)" if "password" in str(e).lower() else ""
            raise PDFError(f"the PDF could not be opened: {e}{hint}; check that the file is complete") from e
        try:
            n_pages = len(doc)
            if n_pages == 0:
                raise PDFError("the PDF has no pages")
            if not 0 <= first_page < n_pages:
                raise PDFError(f"first_page is {first_page}, but the PDF's pages are numbered 0 to {n_pages - 1}")
            last = min(n_pages, first_page + limits.max_pages)
            pages = [_render_page(doc, i, limits) for i in range(first_page, last)]
        finally:
            doc.close()
    log.info("rendered %d of %d PDF pages", len(pages), n_pages)
    return RenderedPDF(n_pages=n_pages, pages=pages)


def _render_page(doc, index: int, limits: PDFLimits) -> RenderedPage:
    import pypdfium2 as pdfium

    page = doc[index]
    try:
        w_pt, h_pt = page.get_size()
        scale = page_scale(w_pt, h_pt, limits)
        try:
            image = page.render(scale=scale).to_pil()
        except pdfium.PdfiumError as e:
            raise PDFError(f"page {index + 1} of the PDF could not be rendered: {e}") from e
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG", optimize=False)
        return RenderedPage(index=index, width=image.width, height=image.height, png=buf.getvalue())
    finally:
        page.close()
