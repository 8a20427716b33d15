"""The web playground: its JSON helpers, its PDF endpoint, and the page itself in headless Chromium.

The browser tests drive Debian's ``chromium`` through the Playwright Python package with the
system executable (Playwright's own browser download is never used); they are skipped only
where that browser stack is absent (``scripts/install_test_extras.sh`` installs it). Each
server is the real app with the tiny random model under uvicorn on an ephemeral loopback
port. Answers of a random-weight model are gibberish, so the page's streamed text is
compared with the API's own non-streamed answer to the same request, never read.
Screenshots land in ``test-artifacts/`` for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from serving import serve
from test_pdf import pdf_bytes

from jvlm.config import JinaVLMConfig
from jvlm.processing.image import image_layout
from jvlm.serve.app import ServerConfig
from jvlm.media import MediaPolicy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
API_KEY = "playground-key-42"
TIMEOUT_MS = 30_000


# ----------------------------------------------------------------------------- helpers

@contextmanager
def serve_page(model_dir: Path, **overrides) -> Iterator[str]:
    """The server app (which serves the playground at /) on loopback; yields the base URL
    as soon as the port is open (the model may still be loading)."""
    with serve(ServerConfig(model_dir=model_dir, **overrides), wait_ready=False) as (base, _state):
        yield base


def wait_ready(base: str) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/ready").status_code != 200:
        assert time.monotonic() < deadline, "the model did not load"
        time.sleep(0.05)


def png_file(path: Path, width: int, height: int) -> Path:
    """A picture with some structure (so it looks like something in the screenshots)."""
    im = Image.new("RGB", (width, height), (233, 238, 245))
    draw = ImageDraw.Draw(im)
    bar = max(width // 16, 4)
    for i, x in enumerate(range(bar, width - bar, bar * 2)):
        top = height - (height * (3 + (i * 5) % 7)) // 11
        draw.rectangle([x, top, x + bar, height - 1], fill=(47, 111, 222 - 12 * (i % 6)))
    draw.ellipse([width * 3 // 4, height // 10, width * 3 // 4 + height // 5, height * 3 // 10], fill=(245, 185, 66))
    im.save(path)
    return path


@pytest.fixture(scope="module")
def image_cfg(tiny_model_dir):
    return JinaVLMConfig.load(tiny_model_dir).image


@pytest.fixture(scope="module")
def server(tiny_model_dir) -> Iterator[str]:
    with serve_page(tiny_model_dir, media=MediaPolicy(max_pixels=4_000_000)) as base:
        wait_ready(base)
        yield base


# ----------------------------------------------------------------------------- layout helper

def test_layout_matches_image_layout_for_every_tile_budget(server, image_cfg):
    """The overlay's numbers are the processor's: tile count and tokens from ``image_layout``."""
    sizes = [(900, 600), (378, 378), (640, 2000)]
    for max_crops in (1, 4, 12):
        r = httpx.post(f"{server}/v1/jvlm/layout", json={
            "images": [{"width": w, "height": h} for w, h in sizes], "max_crops": max_crops})
        assert r.status_code == 200, r.text
        for (w, h), got in zip(sizes, r.json()["images"]):
            want = image_layout(h, w, image_cfg, max_crops)
            assert (got["rows"], got["cols"]) == want.tiling
            assert got["n_tiles"] == len(got["tiles"]) == want.tiling[0] * want.tiling[1] <= max_crops
            assert got["tokens"]["visual"] == want.n_block_tokens
            # cut lines split the picture into rows x cols regions, inside the picture, in order
            for cuts, n, side in ((got["cuts"]["x"], want.tiling[1], w), (got["cuts"]["y"], want.tiling[0], h)):
                assert len(cuts) == n - 1 and cuts == sorted(cuts) and all(0 < c < side for c in cuts)
            # the crops the ViT sees cover the whole picture, edge to edge
            assert min(t["x"] for t in got["tiles"]) == 0 and min(t["y"] for t in got["tiles"]) == 0
            assert max(t["x"] + t["width"] for t in got["tiles"]) == pytest.approx(w, abs=0.05)
            assert max(t["y"] + t["height"] for t in got["tiles"]) == pytest.approx(h, abs=0.05)


def test_layout_refuses_bad_input_in_the_openai_error_shape(server):
    r = httpx.post(f"{server}/v1/jvlm/layout", json={"images": [{"width": "900", "height": 600}]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "images[0].width"
    r = httpx.post(f"{server}/v1/jvlm/layout", json={"images": [{"width": 9, "height": 9}], "max_crops": 99})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_crops"
    assert "between 1 and 12" in r.json()["error"]["message"]
    r = httpx.post(f"{server}/v1/jvlm/layout", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_layout_flags_an_image_over_the_pixel_cap_without_hiding_the_others(server):
    r = httpx.post(f"{server}/v1/jvlm/layout", json={"images": [{"width": 3000, "height": 2000},
                                                                {"width": 300, "height": 200}]})
    big, small = r.json()["images"]
    assert big["error"]["code"] == "image_too_large" and "4,000,000" in big["error"]["message"]
    assert small["n_tiles"] >= 1


def test_pdf_endpoint_answers_pages_and_errors(server):
    r = httpx.post(f"{server}/v1/jvlm/pdf", content=pdf_bytes([(300, 200), (200, 300)]),
                   headers={"Content-Type": "application/pdf"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_pages"] == 2 and body["next_page"] is None
    assert [(p["width"], p["height"]) for p in body["pages"]] == [(600, 400), (400, 600)]
    assert body["pages"][0]["url"].startswith("data:image/png;base64,")
    r = httpx.post(f"{server}/v1/jvlm/pdf", content=b"hello", headers={"Content-Type": "application/pdf"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_pdf"


def test_page_and_assets_are_served_with_a_strict_content_policy(server):
    r = httpx.get(f"{server}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    for name in ("playground.js", "playground.css"):
        assert f"/playground/{name}" in r.text
    for name in ("playground.js", "core.js", "images.js", "playground.css"):
        assert httpx.get(f"{server}/playground/{name}").status_code == 200
    # self-contained: every file the page loads comes from this server (no CDN)
    assert all(ref.startswith(("/", "#", "data:")) for ref in re.findall(r'(?:src|href)="([^"]*)"', r.text))
    css = httpx.get(f"{server}/playground/playground.css").text
    assert "@import" not in css and "url(http" not in css
    r = httpx.get(f"{server}/playground/..%2Fapp.py")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


# ----------------------------------------------------------------------------- in the browser

@pytest.fixture(scope="module")
def playwright():
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip(f"Chromium is not installed ({CHROMIUM}); run scripts/install_test_extras.sh")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing; run scripts/install_test_extras.sh")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture()
def page(playwright, tmp_path):
    """A page in a fresh browser profile (so session storage starts empty)."""
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
        args=CHROMIUM_ARGS, viewport={"width": 1100, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"the page threw: {errors}"


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


def ask(page, text: str):
    """Type a question, press Enter, and return the chat request the page sent."""
    page.fill("#prompt", text)
    with page.expect_request("**/v1/chat/completions") as sent:
        page.press("#prompt", "Enter")
    return sent.value


def test_image_question_streams_an_answer_over_the_tile_grid(page, server, image_cfg, tmp_path):
    page.goto(server)
    page.wait_for_selector("#status[data-state=ready]")
    page.fill("#max-tokens", "6")
    page.set_input_files("#file-input", str(png_file(tmp_path / "chart.png", 900, 600)))

    # the overlay shows the tiling the processor will use, for the default and a smaller budget
    shot = page.locator("#tray figure.shot[data-tiles]")
    for max_crops in (image_cfg.max_crops, 4):
        want = image_layout(600, 900, image_cfg, max_crops)
        rows, cols = want.tiling
        page.wait_for_selector(f"#tray figure.shot[data-tiles='{rows * cols}']")
        assert shot.locator("rect.tile").count() == rows * cols
        assert shot.get_attribute("data-tokens") == str(want.n_block_tokens)
        assert f"{rows * cols} tiles" in shot.locator("figcaption").inner_text()
        if max_crops != 4:  # move the slider with the keyboard, as a person could: 1, then +3
            page.focus("#max-tiles")
            page.keyboard.press("Home")
            for _ in range(3):
                page.keyboard.press("ArrowRight")

    with page.expect_response("**/v1/chat/completions") as answered:
        request = ask(page, "What does this chart show?")
    assert answered.value.headers["content-type"].startswith("text/event-stream")
    answer = page.locator(".turn.assistant .answer").first
    page.wait_for_selector(".turn.assistant .answer[aria-busy=false]")
    sent = request.post_data_json
    assert sent["stream"] is True and sent["max_crops"] == 4 and sent["max_tokens"] == 6

    # what the page assembled from the stream is exactly the API's own answer to that request
    direct = httpx.post(f"{server}/v1/chat/completions", json={**sent, "stream": False}, timeout=60).json()
    assert answer.inner_text() == (direct["choices"][0]["message"]["content"] or "(empty answer)")
    assert "6 generated" in page.locator(".turn.assistant .meta").first.inner_text()
    assert page.locator(".turn.user figure.shot[data-tiles='4']").count() == 1  # the grid stays in the history

    # a follow-up in Arabic: the image travels again, and the bubble reads right to left
    request = ask(page, "ما الذي يظهر في الصورة؟")
    page.locator(".turn.assistant .answer[aria-busy=false]").nth(1).wait_for()
    first_user = request.post_data_json["messages"][0]["content"]
    assert first_user[0]["type"] == "image_url" and first_user[0]["image_url"]["url"].startswith("data:image/png")
    arabic = page.locator(".turn.user .bubble").nth(1)
    assert arabic.get_attribute("dir") == "auto"
    assert arabic.evaluate("el => getComputedStyle(el).direction") == "rtl"
    assert page.locator(".turn.assistant .error:not([hidden])").count() == 0
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "playground-answer.png")


def test_loading_countdown_then_answer_then_oversized_image_error(page, tiny_model_dir, tmp_path):
    with serve_page(tiny_model_dir, load_delay_s=2.5, loading_retry_after_s=1,
               media=MediaPolicy(max_pixels=400_000)) as base:
        page.goto(base)
        page.wait_for_selector("#status[data-state=loading]")
        assert "Loading the model" in page.inner_text("#status")
        page.fill("#max-tokens", "3")
        page.set_input_files("#file-input", str(png_file(tmp_path / "small.png", 320, 240)))
        ask(page, "Hello?")

        # the 503 model_loading answer becomes a readable countdown, then the page retries by itself
        waiting = page.locator(".turn.assistant .error.waiting")
        waiting.wait_for()
        assert "still loading" in waiting.inner_text() and "Retrying in" in waiting.inner_text()
        screenshot(page, "playground-loading.png")
        page.wait_for_selector(".turn.assistant .answer[aria-busy=false]", timeout=TIMEOUT_MS)
        assert waiting.is_hidden()
        page.wait_for_selector("#status[data-state=ready]")

        # 800 x 600 = 480,000 pixels: the page warns on the card, the API refuses, the page says why
        page.set_input_files("#file-input", str(png_file(tmp_path / "big.png", 800, 600)))
        bad = page.locator("#tray figure.shot.bad")
        bad.wait_for()
        assert "400,000" in bad.inner_text()
        ask(page, "And this one?")
        error = page.locator(".turn.assistant .error[role=alert]").last
        error.wait_for()
        assert "An image could not be used" in error.inner_text()
        assert "480,000 pixels" in error.inner_text() and "400,000" in error.inner_text()
        # the failed question and its image are back in the box for another try
        assert page.input_value("#prompt") == "And this one?"
        assert page.locator("#tray figure.shot").count() == 1
        screenshot(page, "playground-error.png")


def test_api_key_is_asked_once_and_kept_for_the_session(page, tiny_model_dir):
    with serve_page(tiny_model_dir, api_key=API_KEY) as base:
        wait_ready(base)
        page.goto(base)
        dialog = page.locator("#key-dialog")
        dialog.wait_for()  # /v1/models answered 401: the page asks for the key
        assert "needs an API key" in page.inner_text("#key-reason")
        page.fill("#key-input", "wrong-key")
        page.click("#key-save")
        page.wait_for_selector("#key-dialog[open]")
        assert "refused" in page.inner_text("#key-reason")
        page.fill("#key-input", API_KEY)
        page.click("#key-save")
        page.wait_for_selector("#status[data-state=ready] >> text=jina-vlm")
        assert page.evaluate("() => sessionStorage.getItem('jvlm.apiKey')") == API_KEY

        page.reload()  # same tab: the key survives and is used without asking again
        page.wait_for_selector("#status[data-state=ready] >> text=jina-vlm")
        assert dialog.is_hidden()

        # a PDF dropped in becomes one image per page (rendered on the server, with the key)
        page.set_input_files("#file-input", files=[{"name": "two-pages.pdf", "mimeType": "application/pdf",
                                                   "buffer": pdf_bytes([(300, 200), (200, 300)])}])
        page.wait_for_selector("#tray figure.shot[data-tiles] >> nth=1")
        names = page.locator("#tray figure.shot img").evaluate_all("els => els.map(e => e.alt)")
        assert names == ["two-pages.pdf · page 1", "two-pages.pdf · page 2"]


def test_reasoning_is_shown_folded_above_the_answer(page):
    """The shipped demo model reads a chart out in a reasoning block before it answers: the
    page shows that block (the server's reasoning_content) apart from the answer bubble, and
    both are exactly what the API returns for the same request."""
    from shipped import DEMO_DIR, EXAMPLES, example

    chart = example("bar_chart")
    with serve_page(DEMO_DIR, kernels="torch") as base:
        wait_ready(base)
        page.goto(base)
        page.wait_for_selector("#status[data-state=ready]")
        page.fill("#max-tokens", "160")
        page.fill("#temperature", "0")
        page.set_input_files("#file-input", str(EXAMPLES / chart["image"]))
        request = ask(page, chart["question"])
        page.wait_for_selector(".turn.assistant .answer[aria-busy=false]")
        direct = httpx.post(f"{base}/v1/chat/completions", json={**request.post_data_json, "stream": False},
                            timeout=60).json()["choices"][0]["message"]
        assert direct["reasoning_content"], "the demo model reads a chart before answering"
        reasoning = page.locator(".turn.assistant details.reasoning").first
        assert reasoning.is_visible() and reasoning.get_attribute("open") is None  # folded
        assert page.locator(".turn.assistant .answer").first.inner_text() == direct["content"]
        reasoning.locator("summary").click()
        assert reasoning.locator(".reasoning-text").inner_text() == direct["reasoning_content"]
        assert "<think>" not in page.locator("#log").inner_text()
        screenshot(page, "playground-reasoning.png")


def test_the_demo_model_says_what_it_is_on_the_page(page):
    """Served as `jvlm serve` serves it, the bundled demo's notice is shown when the page is ready."""
    from shipped import DEMO_DIR

    from jvlm.notices import demo_model_notice

    with serve_page(DEMO_DIR, kernels="torch", served_model_name="jvlm-demo", notice=demo_model_notice()) as base:
        wait_ready(base)
        page.goto(base)
        page.wait_for_selector("#status[data-state=ready]")
        notice = page.locator("#notice")
        notice.wait_for(state="visible")
        text = notice.inner_text()
        assert "Demo model." in text and "jinaai/jina-vlm" in text and "synthetic world" in text


def test_api_docs_page_lists_the_routes_without_the_cdn(page, server):
    """/docs is Swagger UI from a CDN; this machine cannot reach it, so the page must fall back
    to listing the routes from /openapi.json rather than stay blank."""
    page.route("https://cdn.jsdelivr.net/**", lambda route: route.abort())  # offline, whatever the network
    page.goto(f"{server}/docs")
    page.wait_for_selector("text=could not reach")
    listed = page.locator("#swagger-ui").inner_text()
    assert "POST /v1/completions" in listed and "POST /tokenize" in listed and "GET /version" in listed
