"""PDF pages as images, since documents are what people most often ask this model about.

Each selected page is rendered with pdfium (the optional ``pdf`` extra: ``pip install
jvlm[pdf]``) at 144 dpi; the image processor then resizes it to its pixel budget like any
other image, so the render resolution only needs to be at least that budget.
"""

from __future__ import annotations

from pathlib import Path

from jvlm.errors import InvalidImageError

RENDER_SCALE = 2.0  # pdfium renders 72 dpi at scale 1; 144 dpi keeps small print legible


def is_pdf(data: bytes) -> bool:
    return data[:5] == b"%PDF-"


def parse_pages(spec: str | None, n_pages: int) -> list[int]:
    """'1-3,5' -> [0, 1, 2, 4] (1-based, inclusive ranges); None or 'all' -> every page."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(range(n_pages))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise InvalidImageError(f"--pages {spec!r}: {part!r} is not a page number or a range like 2-4") from None
        if not 1 <= first <= last:
            raise InvalidImageError(f"--pages {spec!r}: {part!r} must be increasing page numbers from 1")
        if last > n_pages:
            raise InvalidImageError(f"--pages {spec!r} asks for page {last}, but the PDF has {n_pages} pages")
        out.extend(p - 1 for p in range(first, last + 1) if p - 1 not in out)
    return out


def render_pdf(data: bytes, pages: str | None = None, name: str = "PDF",
               scale: float = RENDER_SCALE) -> list[tuple[int, object]]:
    """(1-based page number, PIL image) for the selected pages of a PDF given as bytes."""
    try:
        import pypdfium2 as pdfium
    except ImportError:
        raise InvalidImageError(f"{name} is a PDF; reading PDFs needs pypdfium2: pip install 'jvlm[pdf]'") from None
    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        raise InvalidImageError(f"{name} looks like a PDF but cannot be opened ({e})") from None
    try:
        if len(doc) == 0:
            raise InvalidImageError(f"{name} has no pages")
        images = []
        for i in parse_pages(pages, len(doc)):
            page = doc[i]
            images.append((i + 1, page.render(scale=scale).to_pil().convert("RGB")))
            page.close()
        return images
    finally:
        doc.close()


def expand_document(path: str | Path, pages: str | None = None) -> list[tuple[int | None, object]]:
    """A path's images as (page number or None, image): the rendered pages of a PDF, else the
    file's bytes as one image."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise InvalidImageError(f"image path {str(path)!r} {what}; pass the path of an image or PDF file")
    data = path.read_bytes()
    return render_pdf(data, pages, name=str(path)) if is_pdf(data) else [(None, data)]
