"""GET /docs works on a network with no way out, and runs no script the service did not serve.

FastAPI's default page loads Swagger UI from a CDN; api/docs.py serves the installed files
instead, under a policy that allows scripts from this origin only. The browser test loads the
page in chromium with every host name but loopback unresolvable, so a single external asset
would fail to load and show up in the console.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import free_port
from tests.recorder.support import ThreadServer
from tests.support.browser import chromium, console_errors


def test_the_page_names_only_this_origin_and_holds_no_inline_script(client: TestClient) -> None:
    reply = client.get("/docs")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
    page = reply.text
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", page), "an asset from another origin"
    assert all(tag.endswith("></script>") for tag in re.findall(r"<script[^>]*>[^<]*</script>", page))
    assert re.findall(r"<script[^>]*>([^<]*)</script>", page) == ["", ""], "inline script"
    policy = reply.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy
    for asset in re.findall(r"(?:src|href)=\"(/docs/assets/[^\"]+)\"", page):
        served = client.get(asset)
        assert served.status_code == 200 and served.content, asset


def test_only_the_listed_files_are_served(client: TestClient) -> None:
    # The package also holds ReDoc and its own code: neither is served.
    for name in ("redoc.standalone.js", "__init__.py", "core.py", "..%2F__init__.py", "x"):
        assert client.get(f"/docs/assets/{name}").status_code == 404, name
    assert client.get("/docs/assets/../../openapi.json").status_code in (200, 404)  # normalised, never a file
    assert client.get("/redoc").status_code == 404  # not offered: it would load ReDoc from a CDN


def test_swagger_ui_renders_in_chromium_with_no_network(app: FastAPI) -> None:
    server = ThreadServer(app, free_port())
    server.start()
    try:
        with chromium(offline=True) as browser:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support import expected_conditions as ec
            from selenium.webdriver.support.ui import WebDriverWait

            browser.get(f"{server.url}/docs")
            title = WebDriverWait(browser, 20).until(
                ec.visibility_of_element_located((By.CSS_SELECTOR, ".swagger-ui .info .title"))
            )
            assert "Countersign" in title.text
            # The operations came from /openapi.json through the page's own script.
            WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
            paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
            assert any("/v1/evidence" in p for p in paths), paths
            assert console_errors(browser) == []
    finally:
        server.stop()
