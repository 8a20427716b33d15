"""PDF pages rendered to PNG images, so a document can be asked about like any picture.

The model reads pixels, not PDF objects: each page becomes one image of the conversation.
This is the one renderer of the project; ``jvlm infer`` (a PDF path or URL with ``--pages``)
and the server's playground (``POST /v1/jvlm/pdf``, since a browser cannot rasterise a PDF
without a large script bundle) both call ``render_pdf``. Rendering uses PDFium through
``pypdfium2``, the optional ``pdf`` extra (``.venv/bin/pip install -e '.[pdf]'``).

Everything a hostile or merely huge file could blow up is capped before work is done: the
file's bytes, the number of pages rendered (a server reports the rest rather than silently
dropping them), and every page's pixel count, which is reached by choosing the render scale
from the page's size in points rather than rendering first and shrinking after. What cannot
be known before rendering -- how long a page's drawing takes, how much memory PDFium needs
for it -- is bounded by rendering in a child process (``processing.bounded``) that is killed
at ``PDFLimits.timeout_s`` or when it passes ``max_memory_bytes``, or when ``cancel`` is set. The model
resizes any input to at most ``ImageProcessingConfig.max_pixels`` anyway, so the default
page budget of twice that keeps text legible without paying for pixels it would discard.
"""

from __future__ import annotations

import base64
import dataclasses
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
#: the PDF header may follow up to 1 KiB of junk (mail gateways and some generators add it)
_HEADER_WINDOW = 1024


class PDFError(JVLMError, ValueError):
    """The input is not a PDF we can render (not a PDF, corrupt, password-protected, empty),
    or the page selection does not fit the document."""

    code = "invalid_pdf"


class PDFTooLargeError(PDFError):
    """The PDF file, or the page selection, is larger than the caller's limits allow."""

    code = "pdf_too_large"


class PDFSupportMissingError(JVLMError, RuntimeError):
    """``jvlm`` was installed without the ``pdf`` extra (``pypdfium2``)."""

    code = "pdf_unsupported"


@dataclass(frozen=True)
class PDFLimits:
    """Caps on one rendering request.

    A server sets every field from its own settings, never from the client. A local caller
    reading the user's own file (the CLI) may lift the byte and page caps with ``None``; the
    pixel cap always applies, because it bounds memory whatever the source of the file.
    """

    max_bytes: int | None = 32 * 1024 * 1024
    max_pages: int | None = 8
    dpi: float = 144.0  # upper bound on resolution; small pages get this, big ones less
    max_page_pixels: int = 2_007_040  # 2 x ImageProcessingConfig.max_pixels
    #: wall-clock budget of one rendering call; a page of 300k vector strokes renders for
    #: minutes in a few KB of file, so the bytes cap alone bounds nothing. None: no child process
    timeout_s: float | None = 30.0
    #: address-space cap of the rendering process (None: no cap)
    max_memory_bytes: int | None = 2 * 2**30


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
    pages: list[RenderedPage]  # in the order asked for
    #: index of the first page left out by the page cap, or None when none was (a page
    #: selection is never cut short: one above the cap is refused instead)
    next_page: int | None = None


def is_pdf(data: bytes) -> bool:
    """Whether ``data`` starts like a PDF (the header may follow up to 1 KiB of junk)."""
    return b"%PDF-" in data[:_HEADER_WINDOW]


def parse_pages(spec: str | None, n_pages: int) -> list[int]:
    """'1-3,5' -> [0, 1, 2, 4]: 1-based inclusive ranges, as typed after ``--pages``, to
    0-based indices in the order given, each page once. None, '' or 'all' -> every page."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(range(n_pages))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise PDFError(f"--pages {spec!r}: {part!r} is not a page number or a range like 2-4") from None
        if not 1 <= first <= last:
            raise PDFError(f"--pages {spec!r}: {part!r} must be increasing page numbers from 1")
        if last > n_pages:
            raise PDFError(f"--pages {spec!r} asks for page {last}, but the PDF has {n_pages} pages")
        out.extend(p - 1 for p in range(first, last + 1) if p - 1 not in out)
    return out


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


def render_pdf(data: bytes, limits: PDFLimits = PDFLimits(), first_page: int = 0, *,
               pages: str | None = None, name: str | None = None, cancel=None) -> RenderedPDF:
    """Render pages of the PDF in ``data`` to PNG bytes.

    Without ``pages``: consecutive pages from ``first_page`` (0-based), at most
    ``limits.max_pages`` of them, with ``next_page`` saying where to continue. With
    ``pages`` (a ``parse_pages`` selection such as '1-3,5'): exactly those pages, or
    ``PDFTooLargeError`` when they are more than ``limits.max_pages``. ``name`` (a file name
    or URL) replaces "the PDF" in error messages.

    Raises ``PDFTooLargeError`` above ``limits.max_bytes`` or past the time and memory limits
    (rendering runs in a child process then; ``cancel``, a ``threading.Event``, stops it early
    with ``bounded.Cancelled``), ``PDFError`` for anything PDFium cannot open or a bad
    selection, and ``PDFSupportMissingError`` without ``pypdfium2``.
    """
    subject = name or "the PDF"
    if pages is not None and first_page != 0:
        raise ValueError("render_pdf takes a page selection or a first_page, not both")
    if limits.max_bytes is not None and len(data) > limits.max_bytes:
        raise PDFTooLargeError(
            f"{subject} is {len(data) / 2**20:.1f} MiB, above the limit of "
            f"{limits.max_bytes / 2**20:.0f} MiB; split it or send the pages as images"
        )
    if not is_pdf(data):
        raise PDFError(f"{name or 'the file'} is not a PDF (no '%PDF-' header); expected a PDF document")
    try:
        import pypdfium2 as pdfium
    except ImportError as e:
        raise PDFSupportMissingError(
            f"{subject} cannot be rendered: the 'pypdfium2' package is missing; install it with "
            ".venv/bin/pip install -e '.[pdf]', or send the pages as images"
        ) from e

    if limits.timeout_s is not None or limits.max_memory_bytes is not None:
        from jvlm.processing.bounded import ResourceLimitError, run_bounded

        here = dataclasses.replace(limits, timeout_s=None, max_memory_bytes=None)
        try:
            return run_bounded(render_pdf, data, here, first_page, pages=pages, name=name,
                               timeout_s=limits.timeout_s, max_memory_bytes=limits.max_memory_bytes,
                               cancel=cancel, what=f"rendering {subject}")
        except ResourceLimitError as exc:
            raise PDFTooLargeError(f"{exc}; send fewer or simpler pages, or the pages as images") from None
    with _PDFIUM_LOCK:
        try:
            doc = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as e:
            hint = " (password-protected PDFs are not supported)" if "password" in str(e).lower() else ""
            raise PDFError(f"{subject} could not be opened: {e}{hint}; check that the file is complete") from e
        try:
            n_pages = len(doc)
            if n_pages == 0:
                raise PDFError(f"{subject} has no pages")
            indices, next_page = _select(n_pages, limits, first_page, pages, subject)
            rendered = [_render_page(doc, i, limits, subject, pdfium.PdfiumError) for i in indices]
        except pdfium.PdfiumError as e:  # e.g. a page tree that refers to itself
            raise PDFError(f"{subject} is damaged ({e}); check that the file is complete and valid") from e
        finally:
            doc.close()
    log.info("rendered %d of %d PDF pages", len(rendered), n_pages)
    return RenderedPDF(n_pages=n_pages, pages=rendered, next_page=next_page)


def _select(n_pages: int, limits: PDFLimits, first_page: int, pages: str | None,
            subject: str) -> tuple[list[int], int | None]:
    """(0-based indices to render, first index left out by the cap or None)."""
    cap = limits.max_pages
    if pages is not None:
        indices = parse_pages(pages, n_pages)
        if cap is not None and len(indices) > cap:
            raise PDFTooLargeError(f"--pages {pages!r} selects {len(indices)} pages of {subject}, above the "
                                   f"limit of {cap}; select fewer pages")
        return indices, None
    if not 0 <= first_page < n_pages:
        raise PDFError(f"first_page is {first_page}, but the PDF's pages are numbered 0 to {n_pages - 1}")
    last = n_pages if cap is None else min(n_pages, first_page + cap)
    return list(range(first_page, last)), (last if last < n_pages else None)


def _render_page(doc, index: int, limits: PDFLimits, subject: str, pdfium_error: type[Exception]) -> RenderedPage:
    page = doc[index]
    try:
        w_pt, h_pt = page.get_size()
        scale = page_scale(w_pt, h_pt, limits)
        try:
            image = page.render(scale=scale).to_pil()
        except pdfium_error as e:
            raise PDFError(f"page {index + 1} of {subject} could not be rendered: {e}") from e
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG", optimize=False)
        return RenderedPage(index=index, width=image.width, height=image.height, png=buf.getvalue())
    finally:
        page.close()
