"""The one media fetcher under its two policies: the library and the CLI reach the user's own
network but never link-local metadata addresses, and stay bounded in bytes, redirects and
time; the server stays strict. A loopback HTTP server plays the user's image host.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from test_server import running_image_server

from jvlm.errors import InvalidImageError
from jvlm.media import LOCAL_POLICY, SERVER_POLICY, MediaError, fetch_media


@pytest.fixture(scope="module")
def image_host():
    with running_image_server() as server:
        yield f"http://127.0.0.1:{server.server_address[1]}", server


def test_the_library_reads_an_image_url_from_the_users_network(tiny, image_host):
    _, processor = tiny
    base, _ = image_host
    processed = processor.process_image(f"{base}/ok.png")
    assert processed.layout.n_crops >= 1


def test_the_server_policy_refuses_the_same_url(image_host):
    base, server = image_host
    seen = len(server.seen)
    with pytest.raises(MediaError, match="loopback/private"):
        fetch_media(f"{base}/ok.png", SERVER_POLICY)
    assert len(server.seen) == seen  # never contacted


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/",
                                 "http://[fe80::1]/x.png"])
def test_link_local_metadata_is_never_fetched_by_the_library(tiny, url):
    _, processor = tiny
    t0 = time.perf_counter()
    with pytest.raises(InvalidImageError, match="link-local"):
        processor.process_image(url)
    assert time.perf_counter() - t0 < 1.0  # refused before connecting


def test_redirects_to_other_schemes_and_oversized_bodies_are_refused(image_host):
    base, _ = image_host
    with pytest.raises(MediaError, match="scheme|http"):
        fetch_media(f"{base}/redirect?to=file:///etc/passwd", LOCAL_POLICY)
    with pytest.raises(MediaError, match="limit"):
        fetch_media(f"{base}/ok.png", replace(LOCAL_POLICY, max_bytes=100))
    assert fetch_media(f"{base}/redirect?to={base}/ok.png", LOCAL_POLICY).startswith(b"\x89PNG")


def test_the_cli_downloads_images_through_the_same_gate(capsys, tiny_model_dir, image_host):
    from jvlm.cli import main

    base, _ = image_host
    assert main(["infer", "--model", str(tiny_model_dir), "-i", f"{base}/ok.png", "-p", "Hi", "--max-new-tokens",
                 "2"]) == 0
    assert main(["infer", "--model", str(tiny_model_dir), "-i", "http://169.254.169.254/x.png", "-p", "Hi"]) == 1
    assert "link-local" in capsys.readouterr().err
