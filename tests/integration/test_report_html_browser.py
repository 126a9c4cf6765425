"""The HTML report as a reader sees it: the page from a real small results set, opened from disk in
headless Chromium (Debian's package) with no network. The DOM after rendering holds the totals and
the tables with the expected numbers; a screenshot shows the inline figure painted; hostile text
stored in a tenant or a dead letter's reason shows as text and never runs.

Without Chromium the test skips, except where the browser was promised: `make test` sets
POINTSMAN_REQUIRE_CHROMIUM=1 on machines with apt-get (its install step puts Debian's package
there), and any CI run (CI set) counts too; there a missing browser fails, saying how to get it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from infra.clickhouse import Database
from pipeline.report import collect
from pipeline.report_plots import collect_series, write_html
from pipeline.sink import SinkWriter
from tests.integration.test_sink_poison import TOPICS, Message, db, messages, opened, result  # noqa: F401
from topics.codec import encode
from topics.schemas import DeadLetter

pytestmark = pytest.mark.integration

TITLE = "Pointsman report"
SCRIPT_TENANT = "<script>document.title='pwned'</script>"
IMG_TENANT = "<img src=x onerror=\"document.title='pwned by onerror'\">"
HOSTILE_REASON = "<svg onload=\"document.title='pwned by svg'\">: a reason"
WINDOW = (1280, 1800)  # wide and tall enough for the tables and the 1200 x 800 figure below them

# as root in a sandbox with no network: no sandbox, no GPU, and nothing that phones home; every
# host name resolves to nothing, so a page that needed the network would show it missing
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars",
         "--force-device-scale-factor=1", f"--window-size={WINDOW[0]},{WINDOW[1]}")


def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    how = ("Debian's chromium is missing: `sh infra/install_chromium.sh` installs it (as the "
           "first `make install` does where apt-get is)")
    if os.environ.get("POINTSMAN_REQUIRE_CHROMIUM") == "1" or os.environ.get("CI", "").lower() not in (
            "", "0", "false"):
        pytest.fail(how, pytrace=False)
    pytest.skip(how)


def browse(browser: str, page: Path, profile: Path, *action: str) -> bytes:
    """One headless Chromium run on the page, from its own empty profile; what it printed."""
    done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *action, page.as_uri()],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout


class Page(HTMLParser):
    """The rendered DOM read back: the title, the text of each heading and paragraph, each table's
    rows of cell texts under its heading, the img elements and any script element."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.title, self.texts, self.scripts = "", [], 0
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str | None]] = []
        self._heading, self._text, self._row, self._in = "", "", [], ""
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("title", "h1", "h2", "p", "td", "th"):
            self._in, self._text = tag, ""
        elif tag == "tr":
            self._row = []
        elif tag == "img":
            self.images.append(dict(attrs))
        self.scripts += tag in ("script", "svg")

    def handle_data(self, data: str) -> None:
        self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.title = self._text
        elif tag in ("h1", "h2", "p"):
            self.texts.append(self._text)
            if tag == "h2":
                self._heading = self._text
        elif tag in ("td", "th"):
            self._row.append(self._text)
        elif tag == "tr":
            self.tables.setdefault(self._heading, []).append(self._row)

    def table(self, heading: str) -> list[dict[str, str]]:
        head, *rows = self.tables[heading]
        return [dict(zip(head, row, strict=True)) for row in rows]


def stored(db: Database) -> None:  # noqa: F811
    """40 answers, 10 per route, over 6.5 hours; the LLM's 10 and the SLM's first 5 from hostile
    tenants; two dead letters, one with a hostile reason."""
    rows = []
    for i in range(40):
        route = ("slm", "llm", "cache", "semantic_cache")[i % 4]
        tenant = SCRIPT_TENANT if route == "llm" else IMG_TENANT if i < 20 and route == "slm" else "acme"
        rows.append(result(f"q{i}", route=route, tenant=tenant, submitted_at=1.7e9 + 600 * i,
                           completed_at=1.7e9 + 600 * i + 1,
                           cost_usd=0.0 if "cache" in route else 0.001 * (1 + (route == "llm")),
                           all_llm_cost_usd=0.002))
        rows[-1].timings.total_ms = 100.0 + 10 * i
    letters = [DeadLetter(reason=HOSTILE_REASON, raw="{}", source_topic="p.route.llm",
                          query_id="d1", tenant=SCRIPT_TENANT, failed_at=1.7e9),
               DeadLetter(reason="llm failed: 503", raw="{}", source_topic="p.route.llm",
                          query_id="d2", tenant="acme", failed_at=1.7e9)]
    SinkWriter(db, TOPICS)(messages(rows) + [Message(TOPICS.deadletter, encode(d), 100 + i)
                                            for i, d in enumerate(letters)])


def colored_pixels(png: bytes) -> tuple[int, int]:
    """How many pixels have colour (text and table lines are grey; the plots are not), and how
    wide the coloured area spans."""
    import matplotlib.image
    import numpy as np

    pixels = matplotlib.image.imread(io.BytesIO(png))[..., :3]
    colored = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.25
    columns = np.flatnonzero(colored.any(axis=0))
    return int(colored.sum()), int(columns[-1] - columns[0] + 1) if columns.size else 0


def test_the_report_page_shows_in_chromium_with_its_numbers_its_figure_and_inert_text(
        db: Database, tmp_path: Path) -> None:  # noqa: F811
    browser = chromium()
    stored(db)
    page = tmp_path / "report.html"
    write_html(collect(db), collect_series(db), page)

    dom = Page(browse(browser, page, tmp_path / "dom-profile", "--dump-dom").decode())
    assert dom.title == TITLE, "a stored value ran as script"  # each hostile string sets the title
    assert dom.scripts == 0  # and none became an element
    assert TITLE in dom.texts
    assert ("40 queries; hit rate 50.0%; cost $0.03 against $0.08 all-LLM (savings 62.5%); "
            "2 dead letters") in dom.texts
    routes = {row["route"]: row for row in dom.table("Per route")}
    assert set(routes) == {"slm", "llm", "cache", "semantic_cache"}
    assert {route: row["queries"] for route, row in routes.items()} == dict.fromkeys(routes, "10")
    assert float(routes["llm"]["cost_usd"]) == pytest.approx(0.02)
    assert float(routes["cache"]["savings"]) == 1.0
    tenants = dom.table("The most costly tenants")
    assert [(t["tenant"], t["queries"]) for t in tenants] == [
        (SCRIPT_TENANT, "10"), ("acme", "25"), (IMG_TENANT, "5")]  # shown as the text it is
    assert [float(t["cost_usd"]) for t in tenants] == pytest.approx([0.02, 0.005, 0.005])
    reasons = {row["example"]: row["letters"] for row in dom.table("Dead letters by reason")}
    assert reasons == {HOSTILE_REASON: "1", "llm failed: 503": "1"}
    assert [image["id"] for image in dom.images] == ["figure"]
    assert (dom.images[0]["src"] or "").startswith("data:image/png;base64,")  # inline: no network

    shot = tmp_path / "shot.png"
    browse(browser, page, tmp_path / "shot-profile", f"--screenshot={shot}")
    colored, span = colored_pixels(shot.read_bytes())
    # the four panels painted: lines and the route-share stack in colour across most of the
    # figure's 1200 px (a broken image would leave a small grey icon and no colour at all)
    assert colored > 50_000 and span > 900, (colored, span)
