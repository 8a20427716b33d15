"""A local file or downloaded bytes as the images ``jvlm infer`` sends: one per PDF page.

Rendering itself lives in ``jvlm.processing.pdf`` (shared with the server's playground);
what is specific here is the command line's trust: the file is the user's own, so neither
its size nor its page count is capped (``--pages`` narrows it), while the per-page pixel cap
and generous time and memory limits still hold. The image processor then resizes each page to its pixel budget like any other
image, so pages are handed over as PNG bytes, exactly like an image file read from disk.
"""

from __future__ import annotations

from pathlib import Path

from jvlm.errors import InvalidImageError
from jvlm.processing.pdf import PDFLimits, is_pdf, render_pdf

#: the user's own file: no byte or page cap; 144 dpi within the default pixel budget per page;
#: rendering is still stopped after 5 minutes or 4 GiB (a damaged file must not hang the command)
CLI_PDF_LIMITS = PDFLimits(max_bytes=None, max_pages=None, timeout_s=300.0, max_memory_bytes=4 * 2**30)


def expand_bytes(data: bytes, pages: str | None = None, name: str = "PDF") -> list[tuple[int | None, bytes]]:
    """(1-based page number, PNG bytes) for the selected pages when ``data`` is a PDF, else
    ``[(None, data)]``: the bytes as one image, left for the image decoder to judge."""
    if not is_pdf(data):
        return [(None, data)]
    rendered = render_pdf(data, CLI_PDF_LIMITS, pages=pages, name=name)
    return [(page.index + 1, page.png) for page in rendered.pages]


def expand_document(path: str | Path, pages: str | None = None) -> list[tuple[int | None, bytes]]:
    """A path's images as (page number or None, bytes): the rendered pages of a PDF, else the
    file's bytes as one image."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise InvalidImageError(f"image path {str(path)!r} {what}; pass the path of an image or PDF file")
    return expand_bytes(path.read_bytes(), pages, name=str(path))
