"""Hostile files and bodies against the real server: a PDF that renders for minutes, a PDF whose
page tree refers to itself, an image whose decoder is slow Python, a JSON number of 5,000
digits. Each is cut at its limit or refused, and a normal request sent at the same time is
answered normally.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image
from test_server import client_for, data_uri, png, serve, user

from jvlm.processing import bounded
from jvlm.serve.app import ServerConfig

PDF_TIMEOUT_S = 2.0


def _pdf(objects: list[bytes]) -> bytes:
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


def render_bomb(strokes: int = 400_000) -> bytes:
    """A page of a few hundred thousand stroked lines: small file, minutes of rendering."""
    content = zlib.compress(b"".join(b"%d 0 m 612 %d l S\n" % (i % 612, i % 792) for i in range(strokes)), 9)
    return _pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                 b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
                 b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream"])


def self_referencing_pdf() -> bytes:
    return _pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"])


def plain_pdf() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(buf, "PDF")
    return buf.getvalue()


def rle8_bmp(width: int = 2000, height: int = 2000, shade: int = 0) -> bytes:
    """An 8-bit BMP with RLE8 compression (Pillow decodes it in Python); ``shade`` varies the palette."""
    row = b""
    for x in range(0, width, 2):  # pairs of pixels alternating colours: nothing to run-length away
        row += b"\x02" + bytes([x % 256])
    pixels = (row + b"\x00\x00") * height + b"\x00\x01"
    palette = b"".join(bytes([i, i, (i + shade) % 256, 0]) for i in range(256))
    header_size = 14 + 40 + len(palette)
    info = (40).to_bytes(4, "little") + width.to_bytes(4, "little") + height.to_bytes(4, "little") \
        + (1).to_bytes(2, "little") + (8).to_bytes(2, "little") + (1).to_bytes(4, "little") \
        + len(pixels).to_bytes(4, "little") + bytes(8) + (256).to_bytes(4, "little") + bytes(4)
    return b"BM" + (header_size + len(pixels)).to_bytes(4, "little") + bytes(4) \
        + header_size.to_bytes(4, "little") + info + palette + pixels


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with serve(ServerConfig(model_dir=tiny_model_dir, pdf_timeout_s=PDF_TIMEOUT_S)) as running:
        yield running


def _chat(base: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    reply = client_for(base, api_key="none").chat.completions.create(
        model="jina-vlm", messages=user("Say something."), max_tokens=4)
    return time.perf_counter() - t0, reply.choices[0].message.content


def _post_pdf(base: str, data: bytes, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{base}/v1/jvlm/pdf", content=data, headers={"Content-Type": "application/pdf"},
                      timeout=timeout)


def test_a_render_bomb_is_cut_at_its_limit_while_others_are_served(server):
    base, _ = server
    expected = _chat(base)[1]
    bomb_pdf = render_bomb()
    with ThreadPoolExecutor(3) as pool:
        t0 = time.perf_counter()
        bomb = pool.submit(_post_pdf, base, bomb_pdf)
        time.sleep(0.5)  # the bomb is rendering
        harmless = pool.submit(_post_pdf, base, plain_pdf())
        chat_s, text = _chat(base)
        bomb_response = bomb.result()
        bomb_s = time.perf_counter() - t0
        harmless_response = harmless.result()
    assert text == expected and chat_s < PDF_TIMEOUT_S
    assert harmless_response.status_code == 200 and harmless_response.json()["n_pages"] == 1  # not queued behind it
    assert bomb_response.status_code == 413, bomb_response.text
    assert f"limit of {PDF_TIMEOUT_S:g} s" in bomb_response.json()["error"]["message"]
    assert PDF_TIMEOUT_S <= bomb_s < PDF_TIMEOUT_S + 4  # (the upload, a process start and the answer)


def test_a_client_that_leaves_stops_its_rendering(server):
    base, _ = server
    assert not bounded.RUNNING
    bomb_pdf = render_bomb()
    with pytest.raises(httpx.ReadTimeout):
        _post_pdf(base, bomb_pdf, timeout=0.8)
    deadline = time.monotonic() + PDF_TIMEOUT_S * 0.75  # well before the time limit would stop it
    while bounded.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not bounded.RUNNING


def test_a_self_referencing_page_tree_is_a_400(server):
    base, _ = server
    r = _post_pdf(base, self_referencing_pdf())
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_pdf"


def test_a_slow_decoding_image_is_refused_at_once_while_others_are_served(server):
    base, _ = server
    bmp = rle8_bmp()
    with Image.open(io.BytesIO(bmp)) as im:  # a valid image: the library (permissive) decodes it
        assert im.size == (2000, 2000)
    body = {"messages": user("What is it?", data_uri(bmp, "image/bmp")), "max_tokens": 2}
    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        refused = pool.submit(httpx.post, f"{base}/v1/chat/completions", json=body, timeout=60)
        chat_s, _ = _chat(base)
        r = refused.result()
        refused_s = time.perf_counter() - t0
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image"
    assert "RLE8" in r.json()["error"]["message"] and refused_s < 2.0


def test_a_5000_digit_integer_is_a_400(server):
    base, _ = server
    body = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"9" * 5000 + b"}"
    r = httpx.post(f"{base}/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_error_texts_carry_no_python_object_reprs(server):
    base, _ = server
    broken = b"\x89PNG\r\n\x1a\n" + os.urandom(64)  # a PNG signature, then garbage
    body = {"messages": user("What is it?", "data:image/png;base64," + base64.b64encode(broken).decode())}
    r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "cannot identify image file" in message  # PIL's text, which names the buffer object
    assert " object at 0x" not in message and "(in-memory data)" in message, message


def test_slow_image_decodes_never_hold_up_a_text_request(tiny_model_dir):
    """With slow encodings allowed, images decode on their own small pool: a text-only request
    sent while four of them decode is answered at once."""
    from jvlm.media import MediaPolicy

    config = ServerConfig(model_dir=tiny_model_dir, media=MediaPolicy(refuse_slow_encodings=False), image_workers=2)
    with serve(config) as (base, state):
        _chat(base)  # warm up
        bodies = [{"messages": user("What is it?", data_uri(rle8_bmp(1000, 1000, shade=i), "image/bmp")),
                   "max_tokens": 1} for i in range(4)]
        with ThreadPoolExecutor(5) as pool:
            t0 = time.perf_counter()
            images = [pool.submit(httpx.post, f"{base}/v1/chat/completions", json=b, timeout=300) for b in bodies]
            time.sleep(0.3)  # the decodes have started
            chat_s, _ = _chat(base)
            answers = [f.result() for f in images]
            images_s = time.perf_counter() - t0
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    print(f"text request {chat_s:.2f} s while four slow images took {images_s:.2f} s")
    assert chat_s < images_s / 2, (chat_s, images_s)
