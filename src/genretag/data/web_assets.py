"""The scripts, styles and fonts of genretag's HTML reports, served from disk so that they open offline.

Great Expectations 1.x's Data Docs templates (``great_expectations/render/view/templates/*.j2``)
and DVC's plots page (``dvc_render/vega.py``) load Bootstrap, bootstrap-table, jQuery, popper,
font-awesome and vega from CDNs. Offline, the Data Docs index lists no validation (its table is
built by bootstrap-table, a CDN script) and every page is unstyled; DVC's vega panels are empty.

The same files, at pinned versions, come from npm: ``web/package.json`` + ``web/package-lock.json``
beside this module, installed into ``web/node_modules`` by ``make`` (``npm ci``; :data:`NPM_CI`).

* :func:`localize_pages` copies them into a report folder (``static/vendor/``) and rewrites each
  page's CDN addresses into relative paths, so that the folder is complete on its own.
* :func:`dvc_plots_template` writes a DVC plots HTML template (``.dvc/plots.html``, named by
  ``plots.html_template`` in ``.dvc/config``) that carries vega, vega-lite and vega-embed inline:
  ``dvc plots show`` then writes a page that works wherever it is opened (DVC's ``{scripts}``
  placeholder, its CDN script tags, is left out of the template).

Run ``python -m genretag.data.web_assets`` (``make`` does) to write the DVC template.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from genretag.core.atomic import write_text
from genretag.core.errors import ConfigError

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
NODE_MODULES = WEB_DIR / "node_modules"
NPM_CI = f"npm ci --no-audit --no-fund --prefix {WEB_DIR}"  # what `make` runs (Makefile, WEB_STAMP)
VENDOR = Path("static") / "vendor"  # inside a report folder: the copied node_modules files

_GX_ASSETS = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"

# A CDN address, as GX 1.24's templates and dvc-render's vega page write it -> the file in node_modules.
# Versions: those of web/package.json (popper.js 1.16.1, the version bootstrap 4.3.1 asks for, in
# place of GX's 1.12.9; bootstrap-table's filter-control CSS of 1.19.1 in place of 1.19.0).
CDN_FILES: dict[str, str] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/dist/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/dist/js/bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/dist/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/dist/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/dist/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/dist/js/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "@forevolve/bootstrap-dark/dist/css/bootstrap-prefers-dark.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "@fortawesome/fontawesome-free/css/all.min.css",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js/dist/umd/popper.min.js",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed/build/vega-embed.min.js",
}
# Folders a copied file reads beside itself (font-awesome's CSS loads ../webfonts/*).
CDN_FOLDERS: tuple[str, ...] = ("@fortawesome/fontawesome-free/webfonts",)
# GX's logo, loaded from S3 (top_navbar.j2, data_docs_default_styles.css) -> the copy GX writes into static/images.
GX_IMAGES: dict[str, str] = {"logo-long.png": "static/images/logo-long.png", "full_logo_dark.png": "static/images/logo-long.png"}
VEGA_SCRIPTS: tuple[str, ...] = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")

# A loaded resource: src="...", <link href="...">, CSS url(...). Anchors (<a href>) are links, not loads.
_RESOURCE = re.compile(r"""(?P<head>\bsrc=|<link\b[^>]*?\bhref=|url\()(?P<quote>["']?)(?P<url>https?://[^"')\s]+)(?P=quote)""")
_SRI = re.compile(r"""\s+(?:integrity="[^"]*"|crossorigin="[^"]*")""")  # file:// cannot satisfy CORS checks


def external_resources(text: str) -> list[str]:
    """The http(s) addresses that an HTML or CSS text *loads* (scripts, styles, images, fonts)."""
    return [match["url"] for match in _RESOURCE.finditer(text)]


def _require(node_modules: Path) -> None:
    if not (node_modules / "jquery" / "package.json").is_file():
        raise ConfigError(f"{node_modules}: the report assets are not installed (run `make` or `{NPM_CI}`)")


def _local_target(url: str) -> Path | None:
    """Where, inside a report folder, the local copy of ``url`` lies; None for an address not known."""
    if url in CDN_FILES:
        return VENDOR / CDN_FILES[url]
    if url.startswith(_GX_ASSETS):
        name = url[len(_GX_ASSETS):].split("?", 1)[0]
        return Path(GX_IMAGES[name]) if name in GX_IMAGES else None
    return None


def localize_pages(folder: Path, *, node_modules: Path = NODE_MODULES) -> list[str]:
    """Make the HTML report in ``folder`` (e.g. GX Data Docs) open offline, in place.

    Copies every :data:`CDN_FILES` file (and :data:`CDN_FOLDERS`) from ``node_modules`` into
    ``folder/static/vendor/``, rewrites each ``*.html`` and ``*.css`` under ``folder`` so that
    known CDN addresses become paths relative to that file, and drops subresource-integrity
    attributes (a ``crossorigin`` script fails under file://). Returns the external addresses
    still loaded (sorted, unique): none with GX 1.24.

    Raises:
        ConfigError: ``node_modules`` does not hold the assets (``make`` was not run).
    """
    _require(node_modules)
    vendor = folder / VENDOR
    for relative in CDN_FILES.values():
        (vendor / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(node_modules / relative, vendor / relative)
    for relative in CDN_FOLDERS:
        shutil.copytree(node_modules / relative, vendor / relative, dirs_exist_ok=True)

    left: set[str] = set()
    for page in sorted([*folder.rglob("*.html"), *folder.rglob("*.css")]):
        if vendor in page.parents:
            continue

        def local(match: re.Match[str], page: Path = page) -> str:
            target = _local_target(match["url"])
            if target is None:
                left.add(match["url"])
                return match[0]
            relative = Path(os.path.relpath(folder / target, page.parent)).as_posix()
            return f"{match['head']}{match['quote']}{relative}{match['quote']}"

        text = page.read_text(encoding="utf-8")
        rewritten = _SRI.sub("", _RESOURCE.sub(local, text))
        if rewritten != text:
            write_text(page, rewritten)
    return sorted(left)


def link_summary(index: Path, *, summary: str, label: str) -> None:
    """Put a link to ``summary`` (relative to ``index``) at the top of the page ``index``'s body."""
    banner = (f'<div style="padding:.6rem 1rem;background:#fff3cd;border-bottom:1px solid #e0c97a">'
              f'<a href="{html.escape(summary)}"><strong>{html.escape(label)}</strong></a></div>')
    text = index.read_text(encoding="utf-8")
    body = re.search(r"<body\b[^>]*>", text)
    if body is None:
        raise ConfigError(f"{index}: no <body> to link {summary} from")
    write_text(index, text[:body.end()] + banner + text[body.end():])


DVC_TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>genretag: DVC plots</title>
    <!-- written by `python -m genretag.data.web_assets` from {source} (npm, pinned); no CDN -->
{scripts}
    <style>
        body {{ font-family: system-ui, sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def dvc_plots_template(path: Path, *, node_modules: Path = NODE_MODULES) -> Path:
    """Write a DVC plots HTML template at ``path`` with vega, vega-lite and vega-embed inline.

    The template keeps DVC's ``{plot_divs}`` and ``{refresh_tag}`` placeholders and leaves out
    ``{scripts}`` (DVC's CDN script tags). A ``</script`` inside the libraries is escaped.

    Raises:
        ConfigError: ``node_modules`` does not hold vega (``make`` was not run).
    """
    _require(node_modules)
    scripts = []
    for relative in VEGA_SCRIPTS:
        code = (node_modules / relative).read_text(encoding="utf-8").replace("</script", "<\\/script")
        scripts.append(f"    <script>/* {relative} */\n{code}\n    </script>")
    write_text(path, DVC_TEMPLATE.format(source=node_modules, scripts="\n".join(scripts)))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genretag.data.web_assets", description=__doc__.splitlines()[0])
    parser.add_argument("--dvc-template", type=Path, default=Path(".dvc") / "plots.html",
                        help="where to write the DVC plots template (default: .dvc/plots.html)")
    args = parser.parse_args(argv)
    print(dvc_plots_template(args.dvc_template))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
