"""The `dvc plots show` / `dvc plots diff` pages: offline, and saying the right thing (issues 8, 14).

A copy of the small real pipeline gets its plots page template built as set-up would build it
(scripts/build_plots_template.py -> .dvc/plots/offline.html, named by `plots.html_template` in
.dvc/config), is committed, and re-run with one more epoch. Then plain `dvc plots show` (the
workspace) and `dvc plots diff HEAD` (HEAD against the workspace) write their pages.

Two readings of every custom template (.dvc/plots/*.json), each compared with the pipeline's own
files (the dvclive loss TSVs, the latent CSV), so a wrong axis, a wrong series name, a scatter
that lost its classes or revisions that cannot be told apart fail a test:

- in the page: each page is opened from disk in headless Chromium (Debian's system browser,
  driven by Playwright) with the network cut off; the page template keeps every chart's Vega view
  and spec (`window.dvcPlots.views`, `.specs`), from which the test reads the scales, the data
  items Vega actually drew (by the field each channel encodes: what is on x, y, colour, dash,
  column, whatever the template names it; with the colour and dash drawn), the axis labels and
  the legends;
- without a browser: the specs of `dvc plots show --json` / `dvc plots diff --json` are drawn
  by vl-convert (the same Vega that the page inlines) and its scene graph's text is read.

The browser tests skip only when no Chromium is installed (`make test` installs Debian's where
apt exists); with REQUIRE_BROWSER=1 (set by .ci/run) a missing browser fails instead. Screenshots
and the pages are kept under artifacts/ at the repository root.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from fashion_vae.dataset import CLASS_NAMES
from tests.conftest import BIN_DIR, REPO_ROOT, SMALL_PARAMS, dvc, run, update_params

# One xdist worker runs the whole module, in order: its tests build on each other's state.
pytestmark = pytest.mark.xdist_group("browser")

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
# Vega-Lite version of the page's inlined bundle (scripts/build_plots_template.py).
VEGA_LITE_VERSION = "5.21"

LOSS_PLOT = "Training loss (train and validation)"
LATENT_PLOT = "Latent space of the test set by class"
SERIES = ("train", "validation")
BASE_EPOCHS = SMALL_PARAMS["train"]["epochs"]


# ---------------------------------------------------------------- what the charts must show


def plot_definitions(project: Path) -> dict[str, dict]:
    """dvc.yaml's top-level `plots:` entries that have a definition, by id."""
    return {name: spec for entry in yaml.safe_load((project / "dvc.yaml").read_text())["plots"]
            if isinstance(entry, dict) for name, spec in entry.items()}


def expected_plots(project: Path) -> tuple[list[str], list[str]]:
    """(ids of the Vega plots, paths of the image plots) from dvc.yaml's top-level `plots:`."""
    images = [entry for entry in yaml.safe_load((project / "dvc.yaml").read_text())["plots"]
              if isinstance(entry, str) and Path(entry).suffix in {".png", ".jpg", ".jpeg", ".gif", ".svg"}]
    return list(plot_definitions(project)), images


def loss_files(project: Path) -> dict[str, str]:
    """{series: TSV path} of the loss plot: dvclive writes train/ and eval/ (= validation)."""
    files = {}
    for path in plot_definitions(project)[LOSS_PLOT]["y"]:
        parts = Path(path).parts
        files["validation" if "eval" in parts else "train" if "train" in parts else path] = path
    assert set(files) == set(SERIES), f"the loss plot's y files are not train/ and eval/: {files}"
    return files


def read_loss_curves(project: Path) -> dict[str, list[tuple[int, float]]]:
    """{series: [(epoch, loss), ...]} from the dvclive TSVs: epoch = step + 1, as numbers."""
    curves = {}
    for series, path in loss_files(project).items():
        with (project / path).open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        curves[series] = [(int(row["step"]) + 1, float(row["loss"])) for row in rows]
    return curves


def read_latents(project: Path) -> dict[int, tuple[float, float, str]]:
    """{test index: (z0, z1, class name)} from the latent CSV the scatter plots."""
    definition = plot_definitions(project)[LATENT_PLOT]
    (path, y_field), = definition["y"].items()
    with (project / path).open(newline="") as handle:
        return {int(row["index"]): (float(row[definition["x"]]), float(row[y_field]), row["class_name"])
                for row in csv.DictReader(handle)}


def snapshot(project: Path) -> dict:
    return {"loss": read_loss_curves(project), "latent": read_latents(project)}


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
def plots_project(small_pipeline, tmp_path_factory) -> dict:
    """A pipeline with two revisions: HEAD (BASE_EPOCHS epochs) and the workspace (one more).

    Returns the project and, per revision, the data its charts must show (read from its files).
    """
    project = copy_project(small_pipeline, tmp_path_factory.mktemp("plots") / "project")
    # What scripts/setup.sh does in a fresh clone (the template is generated, not committed).
    run([str(BIN_DIR / "python"), "scripts/build_plots_template.py"], project)
    configured = dvc(project, "config", "plots.html_template").stdout.strip()
    assert configured == "plots/offline.html", f".dvc/config plots.html_template is {configured!r}"
    assert (project / ".dvc" / configured).is_file()

    baseline = snapshot(project)
    assert [epoch for epoch, _ in baseline["loss"]["train"]] == list(range(1, BASE_EPOCHS + 1))
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline results"], project)
    update_params(project, {"train": {"epochs": BASE_EPOCHS + 1}})
    dvc(project, "repro")
    return {"project": project, "data": {"HEAD": baseline, "workspace": snapshot(project)}}


def command_for(name: str, output: Path | None = None) -> list[str]:
    """`dvc plots show` (plain, as a user types it) or `dvc plots diff HEAD`."""
    args = ["plots", "show"] if name == "show" else ["plots", "diff", "HEAD"]
    return args + (["-o", str(output)] if output else [])


def revisions(name: str) -> list[str]:
    return ["workspace"] if name == "show" else ["HEAD", "workspace"]


# ---------------------------------------------------------------- checks shared by both readings


def check_loss_data(lines: dict[tuple[str, str], list[tuple[float, float]]], data: dict, revs: list[str]):
    """``lines``: {(rev, series): [(epoch, loss), ...]} as plotted; must equal the TSVs."""
    assert set(lines) == {(rev, series) for rev in revs for series in SERIES}, (
        f"loss chart series {sorted(lines)}; expected train and validation for each of {revs}")
    for (rev, series), points in lines.items():
        want = data[rev]["loss"][series]
        got = sorted(points)
        assert all(isinstance(v, (int, float)) for point in got for v in point), (rev, series, got[:3])
        assert [epoch for epoch, _ in got] == [epoch for epoch, _ in want], (
            f"{rev} {series}: epochs plotted {[e for e, _ in got]}, the TSV has {[e for e, _ in want]}")
        assert [loss for _, loss in got] == pytest.approx([loss for _, loss in want], rel=1e-9), (rev, series)


def check_epoch_axis(labels: list[str], data: dict, revs: list[str]):
    """x is labelled 1..N (the longest run shown; N is small here), whole epochs only."""
    n_epochs = max(len(data[rev]["loss"]["train"]) for rev in revs)
    assert labels == [str(epoch) for epoch in range(1, n_epochs + 1)], (
        f"epoch axis labels {labels}, expected 1..{n_epochs}")


def check_latent_points(points: dict[str, dict[int, tuple]], data: dict, revs: list[str]):
    """``points``: {rev: {test index: (x, y, class)}} as plotted; must equal the latent CSV."""
    assert sorted(points) == sorted(revs), f"scatter revisions {sorted(points)}, expected {revs}"
    for rev in revs:
        want, got = data[rev]["latent"], points[rev]
        assert sorted(got) == sorted(want), f"{rev}: {len(got)} points plotted, {len(want)} in the CSV"
        for index, (x, y, class_name) in got.items():
            assert isinstance(x, (int, float)) and isinstance(y, (int, float)), (rev, index, x, y)
            assert (x, y, class_name) == (pytest.approx(want[index][0]), pytest.approx(want[index][1]),
                                          want[index][2]), (rev, index)


# ---------------------------------------------------------------- reading the specs without a browser


def scene_texts(node, roles=(), orient=None) -> list[tuple[tuple[str, ...], str, str | None]]:
    """(roles from the root, text, axis orientation) of every text in a vl-convert scene graph."""
    found = []
    if isinstance(node, dict):
        here = roles + ((node["role"],) if "role" in node else ())
        if node.get("role") == "axis":  # the axis's group item carries its orientation
            for item in node.get("items", []):
                found += scene_texts(item.get("items", []), here, item.get("orient"))
            return found
        if node.get("marktype") == "text":
            found += [(here, item["text"], orient) for item in node.get("items", [])
                      if "text" in item and item.get("opacity") != 0]
        for value in node.values():
            if isinstance(value, (dict, list)):
                found += scene_texts(value, here, orient)
    elif isinstance(node, list):
        for value in node:
            found += scene_texts(value, roles, orient)
    return found


def texts_with(texts, *roles: str, orient: str | None = None) -> list[str]:
    """Texts under all of ``roles`` (axis-label, legend-label, ...), on the ``orient`` axis if given."""
    return [text for path, text, axis in texts
            if all(role in path for role in roles) and (orient is None or axis == orient)]


@pytest.fixture(scope="module")
def json_specs(plots_project) -> dict[str, dict]:
    """{'show'|'diff': {plot id: filled Vega-Lite spec}} from the real `--json` output."""
    specs = {}
    for name in ("show", "diff"):
        out = json.loads(dvc(plots_project["project"], *command_for(name), "--json").stdout)
        specs[name] = {plot: entries[0]["content"] for plot, entries in out["data"].items()
                       if entries and entries[0]["type"] == "vega"}
    return specs


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["show", "diff"])
def test_json_loss_chart_reads_right(plots_project, json_specs, name):
    import vl_convert

    revs, data = revisions(name), plots_project["data"]
    spec = json_specs[name][LOSS_PLOT]
    rows = defaultdict(int)  # the data DVC hands over: every TSV row of every revision
    for row in spec["data"]["values"]:
        rows[row["rev"]] += 1
    assert dict(rows) == {rev: sum(map(len, data[rev]["loss"].values())) for rev in revs}, dict(rows)

    texts = scene_texts(vl_convert.vegalite_to_scenegraph(spec, vl_version=VEGA_LITE_VERSION))
    assert texts_with(texts, "axis-title", orient="bottom") == ["epoch"]
    check_epoch_axis(texts_with(texts, "axis-label", orient="bottom"), data, revs)
    assert sorted(texts_with(texts, "legend-label")) == sorted([*SERIES, *revs]), (
        f"legend {texts_with(texts, 'legend-label')}, expected the series {SERIES} and revisions {revs}")


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["show", "diff"])
def test_json_latent_chart_reads_right(plots_project, json_specs, name):
    import vl_convert

    revs = revisions(name)
    spec = json_specs[name][LATENT_PLOT]
    texts = scene_texts(vl_convert.vegalite_to_scenegraph(spec, vl_version=VEGA_LITE_VERSION))
    assert texts_with(texts, "legend-label") == list(CLASS_NAMES), texts_with(texts, "legend-label")
    assert texts_with(texts, "column-header", "title-text") == revs, texts_with(texts, "column-header")
    titles = {orient: texts_with(texts, "axis-title", orient=orient) for orient in ("bottom", "left")}
    assert titles["bottom"][0].startswith("z0") and titles["left"][0].startswith("z1"), titles
    for label in texts_with(texts, "axis-label"):  # numeric axes: every tick a number
        assert re.fullmatch(r"[−-]?\d+(\.\d+)?", label), f"non-numeric axis label {label!r}"


# ---------------------------------------------------------------- the pages in a browser


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
    return chromium_or_skip()


def chromium_or_skip() -> str:
    """The system Chromium, or a skip (a failure with REQUIRE_BROWSER=1) saying why there is none."""
    path = find_chromium()
    if path is None:
        explicit = os.environ.get("CHROMIUM_PATH")
        where = (f"CHROMIUM_PATH={explicit} is not an executable" if explicit
                 else "no Chromium browser found (looked for " + ", ".join(CHROMIUM_NAMES) + " on PATH)")
        reason = f"{where}; `make test` installs Debian's chromium where apt exists"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def pages(chromium, plots_project) -> dict[str, Path]:
    """{'show': index.html, 'diff': index.html} written by real DVC commands."""
    project = plots_project["project"]
    found = {}
    for name in ("show", "diff"):
        out_dir = project / f"plots_{name}"
        dvc(project, *command_for(name, None if name == "show" else out_dir))
        found[name] = (project / "dvc_plots" if name == "show" else out_dir) / "index.html"
    return found


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


# Waits until every Vega view exists (or an error shows) and every image has loaded.
RENDERED_JS = """
([vegaIds]) => {
  const state = window.dvcPlots;
  const drawn = state && state.ready && vegaIds.every(id => state.views[id]);
  const images = Array.from(document.images).every(img => img.complete);
  return document.readyState === 'complete' && images && (drawn || (state && state.errors.length > 0));
}
"""

# What one chart shows, read from its Vega view: scale domains; the field on each encoding channel;
# every drawn mark item with its data (the tuple after the spec's transforms) and its colour and
# dash; every text with the roles above it (axis-label, legend-label, column-header, ...) and, inside
# an axis, the axis's orientation; the legend symbols.
CHART_CONTENT_JS = """
(id) => {
  const view = window.dvcPlots.views[id];
  const encoding = (window.dvcPlots.specs[id] || {}).encoding || {};
  const out = {scales: {}, fields: {}, items: [], texts: [], legendSymbols: []};
  for (const [channel, def] of Object.entries(encoding)) {
    if (def && typeof def.field === 'string') out.fields[channel] = def.field;
  }
  for (const name of ['x', 'y', 'color', 'strokeDash']) {
    try { out.scales[name] = view.scale(name).domain(); } catch (e) { /* no such scale */ }
  }
  const plain = (d) => {
    const o = {};
    for (const k of Object.keys(d || {})) {
      const v = d[k];
      if (v === null || ['string', 'number', 'boolean'].includes(typeof v)) o[k] = v;
    }
    return o;
  };
  const walk = (mark, roles, orient) => {
    const here = roles.concat([mark.role]);
    for (const item of mark.items || []) {
      const axis = mark.role === 'axis' ? (item.orient || (item.datum && item.datum.orient)) : orient;
      if (mark.marktype === 'text' && item.opacity !== 0) {
        out.texts.push({roles: here, text: String(item.text), orient: axis || null});
      } else if (mark.role === 'mark' && mark.marktype !== 'group') {
        out.items.push({marktype: mark.marktype, datum: plain(item.datum),
                        stroke: item.stroke || null, fill: item.fill || null,
                        dash: item.strokeDash ? String(item.strokeDash) : null});
      } else if (mark.role === 'legend-symbol') {
        out.legendSymbols.push({label: item.datum && item.datum.label, shape: item.shape || null,
                                strokeWidth: item.strokeWidth,
                                stroke: item.stroke || null, fill: item.fill || null,
                                dash: item.strokeDash ? String(item.strokeDash) : null});
      }
      for (const child of item.items || []) walk(child, here, axis);
    }
  };
  walk(view.scenegraph().root, [], null);
  return out;
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
    # Let every view finish its last dataflow pass before the screenshots and the reading.
    page.evaluate("() => Promise.all(Object.values(dvcPlots.views).map(v => v.runAsync())).then(() => true)")
    page.screenshot(path=str(ARTIFACTS / f"plots_{name}.png"), full_page=True)
    page.locator(f"#{html_id(LOSS_PLOT)}").screenshot(path=str(ARTIFACTS / f"loss_chart_{name}.png"))
    shutil.copytree(html.parent, ARTIFACTS / f"plots_{name}", dirs_exist_ok=True)
    return page, context, remote, errors


@pytest.fixture(scope="module")
def rendered(pages, browser):
    """{'show'|'diff': (page, errors, network requests)} with every chart drawn; closed at the end."""
    opened, contexts = {}, []
    try:
        for name, html in pages.items():
            vega_ids = [html_id(plot) for plot in expected_plots(html.parents[1])[0]]
            page, context, remote, errors = render_page(browser, html, name, vega_ids)
            contexts.append(context)
            opened[name] = (page, errors, remote)
        yield opened
    finally:
        for context in contexts:
            context.close()


def chart_content(page, plot: str) -> dict:
    content = page.evaluate(CHART_CONTENT_JS, html_id(plot))
    # DVC escapes '.', '[' and ']' in x/y field names for Vega-Lite; the data keys are unescaped.
    content["fields"] = {channel: field.replace("\\", "") for channel, field in content["fields"].items()}
    content["texts"] = [(tuple(t["roles"]), t["text"], t["orient"]) for t in content["texts"]]
    return content


def page_texts(content: dict, *roles: str, orient: str | None = None) -> list[str]:
    return [text for path, text, axis in content["texts"]
            if all(role in path for role in roles) and (orient is None or axis == orient)]


@pytest.mark.browser
@pytest.mark.parametrize("name", ["show", "diff"])
def test_plots_page_has_no_remote_resources(pages, name):
    html = pages[name].read_text(encoding="utf8")
    assert "cdn.jsdelivr" not in html
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.IGNORECASE), "the page loads an external script"
    assert not re.search(r"<(img|link|iframe)[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", html, re.IGNORECASE)
    assert "vegaEmbed" in html and "offline dvc plots template" in html, (
        "the page was not built from .dvc/plots/offline.html")


@pytest.mark.browser
@pytest.mark.parametrize("name", ["show", "diff"])
def test_page_loss_chart_plots_epochs_and_named_series(rendered, plots_project, name):
    page, errors, _ = rendered[name]
    assert errors == [], "\n".join(errors)
    revs, data = revisions(name), plots_project["data"]
    chart = chart_content(page, LOSS_PLOT)
    field = chart["fields"].get  # the data field on each channel (x, y, color, strokeDash)

    # Axes: epochs 1..N (the longest run shown) in whole numbers; the y title from dvc.yaml.
    n_epochs = max(len(data[rev]["loss"]["train"]) for rev in revs)
    assert chart["scales"]["x"] == [1, n_epochs], f"epoch axis domain {chart['scales']['x']}"
    check_epoch_axis(page_texts(chart, "axis-label", orient="bottom"), data, revs)
    assert page_texts(chart, "axis-title", orient="bottom") == ["epoch"]
    y_label = plot_definitions(plots_project["project"])[LOSS_PLOT]["y_label"]
    assert page_texts(chart, "axis-title", orient="left") == [y_label]

    # The data Vega drew: one line per (revision, series), epoch 1..N against the TSV's loss.
    lines, styles = defaultdict(list), defaultdict(set)
    for item in chart["items"]:
        if item["marktype"] == "line":
            datum = item["datum"]
            key = (datum.get(field("strokeDash")), datum.get(field("color")))
            lines[key].append((datum.get(field("x")), datum.get(field("y"))))
            styles[key].add((item["stroke"], item["dash"]))
    check_loss_data(dict(lines), data, revs)
    points = sorted((item["datum"].get(field("strokeDash")), item["datum"].get(field("color")),
                     item["datum"].get(field("x")))
                    for item in chart["items"] if item["marktype"] == "symbol")
    assert points == sorted((rev, series, epoch) for (rev, series), line in lines.items()
                            for epoch, _ in line), "the points do not sit on the lines"

    # Series named train and validation (colour), revisions told apart (dash), each line one style.
    assert chart["scales"]["color"] == list(SERIES), chart["scales"]["color"]
    assert sorted(chart["scales"]["strokeDash"]) == sorted(revs), chart["scales"]["strokeDash"]
    legend = page_texts(chart, "legend-label")
    assert sorted(legend) == sorted([*SERIES, *revs]), f"legend {legend}"
    assert all(len(style) == 1 for style in styles.values()), dict(styles)
    # The revision legend draws each revision's dash, visibly (a filled circle would hide it).
    symbols = {s["label"]: s for s in chart["legendSymbols"] if s["label"] in revs}
    assert sorted(symbols) == sorted(revs), chart["legendSymbols"]
    visible = [s["shape"] == "stroke" and s["stroke"] not in (None, "transparent") and s["strokeWidth"]
               for s in symbols.values()]
    assert all(visible), f"revision legend symbols are not visible line samples: {symbols}"
    assert len({s["dash"] for s in symbols.values()}) == len(revs), f"revisions' legend alike: {symbols}"
    style = {key: next(iter(value)) for key, value in styles.items()}
    assert len(set(style.values())) == len(style), f"two lines drawn alike: {style}"
    for rev in revs:
        assert style[(rev, "train")][0] != style[(rev, "validation")][0], "train and validation same colour"
    if len(revs) == 2:
        for series in SERIES:
            assert style[(revs[0], series)][1] != style[(revs[1], series)][1], "revisions drawn alike"


@pytest.mark.browser
@pytest.mark.parametrize("name", ["show", "diff"])
def test_page_latent_chart_plots_classes_per_revision(rendered, plots_project, name):
    page, errors, _ = rendered[name]
    assert errors == [], "\n".join(errors)
    revs, data = revisions(name), plots_project["data"]
    chart = chart_content(page, LATENT_PLOT)
    field = chart["fields"].get  # the data field on each channel (x, y, color, column)

    # Every test image once per revision, at its (z0, z1) as numbers, with its class.
    symbols = [item for item in chart["items"] if item["marktype"] == "symbol"]
    points: dict[str, dict[int, tuple]] = defaultdict(dict)
    for item in symbols:
        datum = item["datum"]
        index = int(datum["index"])  # the CSV's own column: which test image this point is
        points[datum.get(field("column"))][index] = (
            datum.get(field("x")), datum.get(field("y")), datum.get(field("color")))
    assert len(symbols) == sum(len(data[rev]["latent"]) for rev in revs)
    check_latent_points(dict(points), data, revs)

    # Numeric axes covering every point (string values would give a lexical, wrong extent).
    for axis, position in (("x", 0), ("y", 1)):
        low, high = chart["scales"][axis]
        assert all(isinstance(v, (int, float)) for v in (low, high)), chart["scales"][axis]
        values = [p[position] for rev in revs for p in data[rev]["latent"].values()]
        assert low <= min(values) and max(values) <= high, (axis, low, high, min(values), max(values))

    # Coloured by the 10 class names: the legend, the colour scale, one colour per class.
    assert chart["scales"]["color"] == list(CLASS_NAMES), chart["scales"]["color"]
    assert page_texts(chart, "legend-label") == list(CLASS_NAMES)
    fills = defaultdict(set)
    for item in symbols:
        fills[item["datum"].get(field("color"))].add(item["fill"])
    assert all(len(f) == 1 for f in fills.values()), dict(fills)
    assert len({next(iter(f)) for f in fills.values()}) == len(fills), f"classes share a colour: {fills}"

    # One facet column per revision, headed by its name.
    assert page_texts(chart, "column-header", "title-text") == revs


@pytest.mark.browser
@pytest.mark.parametrize("name", ["show", "diff"])
def test_plots_page_renders_offline(rendered, pages, name):
    """Nothing from the network, no error, header names the revisions, every image loaded."""
    page, errors, remote = rendered[name]
    revs = revisions(name)
    project = pages[name].parents[1]
    vega_plots, image_plots = expected_plots(project)
    assert remote == [], f"the page tried to reach the network: {remote}"
    assert errors == [], "\n".join(errors)
    body = page.inner_text("body")
    assert not re.search(r"error", body, re.IGNORECASE), f"error text on the page:\n{body[:2000]}"

    header = page.inner_text("header")
    for rev in revs:
        assert rev in header and rev in page.title(), f"{rev!r} missing from header {header!r}"

    # Every Vega chart drawn by the inlined Vega-Embed as SVG.
    assert page.locator(".vega-embed").count() == len(vega_plots)
    for plot in vega_plots:
        assert page.locator(f"#{html_id(plot)} svg .role-mark").count() > 0, f"{plot} drew nothing"

    # Images: every plot image, once per revision, loaded (naturalWidth > 0) under its path.
    images = page.evaluate(
        "() => Array.from(document.images).map(i => ({src: i.getAttribute('src'), "
        "w: i.naturalWidth, h: i.naturalHeight, rev: i.previousElementSibling && "
        "i.previousElementSibling.textContent.trim()}))")
    assert len(images) == len(image_plots) * len(revs), images
    assert all(img["w"] > 0 and img["h"] > 0 for img in images), images
    assert sorted(img["rev"] for img in images) == sorted(revs * len(image_plots)), images
    for image in image_plots:
        assert page.locator(f"#{html_id(image)}").count() == 1, f"no block for {image}"
        assert image in page.inner_text(f"#{html_id(image)}")
        widths = page.evaluate(
            "(id) => Array.from(document.getElementById(id).querySelectorAll('img'))"
            ".map(i => i.naturalWidth)", html_id(image))
        assert len(widths) == len(revs) and min(widths) > 0, (image, widths)

    # Tooltips: hovering a latent point shows its class, test index and revision.
    point = page.locator(f"#{html_id(LATENT_PLOT)} svg g.mark-symbol.role-mark > path").first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tooltip = page.locator("#vg-tooltip-element")
    tooltip.wait_for(state="visible", timeout=10_000)
    tip = tooltip.inner_text()
    assert "class" in tip and "test index" in tip and "revision" in tip, tip
    assert any(c in tip for c in CLASS_NAMES), tip
    page.mouse.move(0, 0)
    assert errors == [], "\n".join(errors)
