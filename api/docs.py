"""GET /docs: the API's interactive description, served entirely by the service.

FastAPI's default /docs and /redoc pages load Swagger UI and ReDoc from a CDN; a municipal
network that is offline (or that forbids third-party scripts) then shows a blank page. Here
the Swagger UI 5 files come from the `fastapi-offline` package installed beside the service,
and the page holds no inline script, so it runs under a content security policy that allows
scripts from this origin only. ReDoc is not offered: one description page is enough, and it
would be one more vendored bundle to keep current.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

DOCS = "/docs"
ASSETS = DOCS + "/assets"
# The only files the page needs; anything else under /docs/assets is a 404, so the bundle's
# other files (ReDoc, its Python code) are never served.
_FILES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# Swagger UI sets style attributes from script, and shows the schema's images inline as data: URLs.
# The page sets it itself; api.middleware.SecurityHeaders adds its stricter default only where none is set.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" type="image/png" href="{assets}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/init.js"></script>
</body>
</html>
"""
# The initialiser is a file, not an inline block: the policy above forbids inline script.
_INIT = """window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""


def _bundle_dir() -> Path:
    # Only its static files are used (its own pages would not pass the policy above).
    return Path(str(importlib.resources.files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Serve the page, its initialiser and the three Swagger UI files; none is in the schema."""
    bundle = _bundle_dir()
    page = _PAGE.format(title=app.title, assets=ASSETS, openapi=app.openapi_url)

    @app.get(DOCS, include_in_schema=False)
    def docs_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": DOCS_CSP})

    @app.get(ASSETS + "/init.js", include_in_schema=False)
    def docs_init() -> Response:
        return Response(_INIT, media_type="text/javascript; charset=utf-8")

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    def docs_asset(name: str) -> FileResponse:
        media_type = _FILES.get(name)
        if media_type is None:
            raise HTTPException(404, "no such file")
        # Immutable for a day: the files change only with the installed package.
        return FileResponse(bundle / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})
