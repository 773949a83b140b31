"""`dvc plots show` and `dvc plots diff` pages render OFFLINE in a real browser (issue 8).

A copy of the small real pipeline gets its plots page template built as set-up would build it
(scripts/build_plots_template.py -> .dvc/plots/offline.html, named by `plots.html_template` in
.dvc/config), then plain `dvc plots show`, and `dvc plots diff HEAD` after a second `dvc repro`
with one more epoch. Each page is opened from disk in headless Chromium (Debian's system browser,
driven by Playwright) with the network cut off, and must draw every chart and image.

Skips only when no Chromium is installed (`WITH_BROWSER=1 make setup` installs it); with
REQUIRE_BROWSER=1 (set by .ci/run) a missing browser fails instead. Screenshots and the pages
themselves are kept under artifacts/ at the repository root.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from fashion_vae.dataset import CLASS_NAMES
from tests.conftest import BIN_DIR, REPO_ROOT, SMALL_PARAMS, dvc, run, update_params

pytestmark = pytest.mark.browser

ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # No name resolves: even a request that slipped past the route below could not leave the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
RENDER_TIMEOUT_MS = 90_000


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the system Chromium; session-scoped so a skip comes before the pipeline runs."""
    path = find_chromium()
    if path is None:
        explicit = os.environ.get("CHROMIUM_PATH")
        where = (f"CHROMIUM_PATH={explicit} is not an executable" if explicit
                 else "no Chromium browser found (looked for " + ", ".join(CHROMIUM_NAMES) + " on PATH)")
        reason = f"{where}; install Debian's with `WITH_BROWSER=1 make setup`"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return path


def expected_plots(project: Path) -> tuple[list[str], list[str]]:
    """(ids of the Vega plots, paths of the image plots) from dvc.yaml's top-level `plots:`."""
    vega, images = [], []
    for entry in yaml.safe_load((project / "dvc.yaml").read_text())["plots"]:
        if isinstance(entry, dict):
            vega.extend(entry)
        elif Path(entry).suffix in {".png", ".jpg", ".jpeg", ".gif", ".svg"}:
            images.append(entry)
    return vega, images


def html_id(name: str) -> str:
    """The element id dvc-render gives a plot (Renderer.remove_special_chars)."""
    return name.translate({ord(c): "_" for c in r"!@#$%^&*()[]{};,<>?\/:.|`~=_+ "})


def copy_project(src: Path, dest: Path) -> Path:
    """A private copy of the shared pipeline (git history and DVC cache included)."""
    def skip_dvc_tmp(directory, names):  # locks and indexes of the original stay behind
        return ["tmp"] if Path(directory).name == ".dvc" else []

    shutil.copytree(src, dest, symlinks=True, ignore=skip_dvc_tmp)
    return dest


@pytest.fixture(scope="module")
def pages(chromium, small_pipeline, tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """{'show': (index.html, revs), 'diff': (index.html, revs)} written by real DVC commands."""
    project = copy_project(small_pipeline, tmp_path_factory.mktemp("browser") / "project")
    # What scripts/setup.sh does in a fresh clone (the template is generated, not committed).
    run([str(BIN_DIR / "python"), "scripts/build_plots_template.py"], project)
    configured = dvc(project, "config", "plots.html_template").stdout.strip()
    assert configured == "plots/offline.html", f".dvc/config plots.html_template is {configured!r}"
    assert (project / ".dvc" / configured).is_file()

    dvc(project, "plots", "show")  # plain, as a user types it: the template comes from .dvc/config
    show = project / "dvc_plots" / "index.html"

    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline results"], project)
    update_params(project, {"train": {"epochs": SMALL_PARAMS["train"]["epochs"] + 1}})
    dvc(project, "repro")
    diff_dir = project / "plots_diff"
    dvc(project, "plots", "diff", "HEAD", "-o", str(diff_dir))
    return {"show": (show, ["workspace"]), "diff": (diff_dir / "index.html", ["HEAD", "workspace"])}


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module", autouse=True)
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# Waits until every Vega container has drawn marks (or shows an error) and every image has loaded.
RENDERED_JS = """
([vegaIds]) => {
  const charts = vegaIds.map(id => document.getElementById(id));
  const drawn = charts.every(el => el && (
      el.querySelector('svg g.role-mark > *') || el.querySelector('canvas') ||
      /error/i.test(el.textContent)));
  const images = Array.from(document.images).every(img => img.complete);
  return document.readyState === 'complete' && drawn && images;
}
"""

CHART_FACTS_JS = """
(id) => {
  const el = document.getElementById(id);
  const marks = (sel) => el.querySelectorAll(sel).length;
  return {
    embedded: el.classList.contains('vega-embed'),
    svgs: marks('svg'),
    canvases: marks('canvas'),
    markItems: marks('svg g.role-mark > *'),
    lines: marks('svg g.mark-line.role-mark > path'),
    symbols: marks('svg g.mark-symbol.role-mark > path'),
    legendText: Array.from(el.querySelectorAll('svg g.role-legend text')).map(t => t.textContent),
    text: Array.from(el.querySelectorAll('svg text')).map(t => t.textContent),
  };
}
"""


def render_page(browser, html: Path, name: str, vega_ids: list[str]):
    """Open ``html`` from disk with the network cut off; return (page, context, requests, errors)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    remote: list[str] = []

    def only_local(route):
        if route.request.url.startswith(LOCAL_SCHEMES):
            route.continue_()
        else:
            remote.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_local)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and errors.append(f"console error: {msg.text}"))
    page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url} ({req.failure})"))
    page.goto(html.as_uri(), wait_until="load")
    assert page.evaluate("typeof window.vegaEmbed") == "function", (
        f"Vega-Embed is not on the page {html} (was .dvc/plots/offline.html used?); "
        f"network requests blocked: {remote}; errors: {errors}")
    page.wait_for_function(RENDERED_JS, arg=[vega_ids], timeout=RENDER_TIMEOUT_MS)
    page.wait_for_timeout(300)  # let Vega finish its last async dataflow pass before the screenshot
    page.screenshot(path=str(ARTIFACTS / f"plots_{name}.png"), full_page=True)
    shutil.copytree(html.parent, ARTIFACTS / f"plots_{name}", dirs_exist_ok=True)
    return page, context, remote, errors


@pytest.mark.parametrize("name", ["show", "diff"])
def test_plots_page_has_no_remote_resources(pages, name):
    html = pages[name][0].read_text(encoding="utf8")
    assert "cdn.jsdelivr" not in html
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.IGNORECASE), "the page loads an external script"
    assert not re.search(r"<(img|link|iframe)[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", html, re.IGNORECASE)
    assert "vegaEmbed" in html and "offline dvc plots template" in html, (
        "the page was not built from .dvc/plots/offline.html")


@pytest.mark.parametrize("name", ["show", "diff"])
def test_plots_page_renders_offline(pages, browser, name):
    html, revs = pages[name]
    project = html.parents[1]
    vega_plots, image_plots = expected_plots(project)
    vega_ids = [html_id(plot) for plot in vega_plots]
    loss_id, latent_id = html_id("Training loss (train and validation)"), html_id(
        "Latent space of the test set by class")
    assert {loss_id, latent_id} <= set(vega_ids), f"dvc.yaml's plots changed: {vega_plots}"

    page, context, remote, errors = render_page(browser, html, name, vega_ids)
    try:
        assert remote == [], f"the page tried to reach the network: {remote}"
        assert errors == [], "\n".join(errors)
        body = page.inner_text("body")
        assert not re.search(r"error", body, re.IGNORECASE), f"error text on the page:\n{body[:2000]}"

        # Header and title name the revisions shown.
        header = page.inner_text("header")
        for rev in revs:
            assert rev in header and rev in page.title(), f"{rev!r} missing from header {header!r}"

        # Every Vega chart is drawn, as SVG marks, by the inlined Vega-Embed.
        assert page.locator(".vega-embed").count() == len(vega_ids)
        facts = {chart: page.evaluate(CHART_FACTS_JS, chart) for chart in vega_ids}
        for chart, fact in facts.items():
            assert fact["embedded"] and fact["svgs"] >= 1 and fact["markItems"] > 0, (chart, fact)

        # Training curves: a line per loss file (train and eval) per revision, with a legend.
        loss = facts[loss_id]
        assert loss["lines"] >= 2 * len(revs), loss
        legend = " ".join(loss["legendText"])
        assert "train/loss.tsv" in legend and "eval/loss.tsv" in legend, legend
        for rev in revs:
            assert rev in legend, (rev, legend)
        assert "epoch" in loss["text"] and any("loss" in t for t in loss["text"]), loss["text"]

        # Latent scatter: every test image a point, per revision (one facet column each),
        # coloured by class name with the 10 names in the legend.
        latent = facts[latent_id]
        n_test = sum(1 for _ in (project / "data" / "latent" / "test_latent.csv").open()) - 1
        assert latent["symbols"] == n_test * len(revs), (latent["symbols"], n_test, revs)
        assert set(CLASS_NAMES) <= set(latent["legendText"]), latent["legendText"]
        for rev in revs:
            assert rev in latent["text"], f"no facet column for {rev!r}: {latent['text']}"
        colours = page.evaluate(
            "(id) => new Set(Array.from(document.getElementById(id).querySelectorAll("
            "'svg g.mark-symbol.role-mark > path')).map(p => p.getAttribute('fill'))).size", latent_id)
        assert colours == len(CLASS_NAMES), f"{colours} point colours, expected one per class"

        # Images: every plot image, once per revision, loaded (naturalWidth > 0) under its path.
        images = page.evaluate(
            "() => Array.from(document.images).map(i => ({src: i.getAttribute('src'), "
            "w: i.naturalWidth, h: i.naturalHeight, rev: i.previousElementSibling && "
            "i.previousElementSibling.textContent.trim()}))")
        assert len(images) == len(image_plots) * len(revs), images
        assert all(img["w"] > 0 and img["h"] > 0 for img in images), images
        assert sorted((img["rev"] for img in images)) == sorted(revs * len(image_plots)), images
        for image in image_plots:
            assert page.locator(f"#{html_id(image)}").count() == 1, f"no block for {image}"
            assert image in page.inner_text(f"#{html_id(image)}")
            block_srcs = page.evaluate(
                "(id) => Array.from(document.getElementById(id).querySelectorAll('img'))"
                ".map(i => i.naturalWidth)", html_id(image))
            assert len(block_srcs) == len(revs) and min(block_srcs) > 0, (image, block_srcs)

        # Tooltips: hovering a latent point shows its class, test index and revision.
        point = page.locator(f"#{latent_id} svg g.mark-symbol.role-mark > path").first
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        tooltip = page.locator("#vg-tooltip-element")
        tooltip.wait_for(state="visible", timeout=10_000)
        tip = tooltip.inner_text()
        assert "class" in tip and "test index" in tip and "revision" in tip, tip
        assert any(c in tip for c in CLASS_NAMES), tip
        assert errors == [], "\n".join(errors)
    finally:
        context.close()
