"""The leaderboard page and a run's page in a real headless Chromium (Debian's package).

Skipped with a reason only when chromium is absent and $CI is unset; in CI a missing browser fails.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from browser import Browser, require_chromium
from medvision_eval.cli import main

REPO = Path(__file__).resolve().parents[1]
PRED = (255, 0, 255)
GT = (0, 224, 0)


@pytest.fixture(scope="module")
def browser():
    b = Browser(require_chromium())
    yield b
    b.close()


def _no_remote_urls(html: str) -> None:
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs, "the page references its plots/images"
    assert not [r for r in refs if re.match(r"(https?:)?//", r)], "no CDN or remote resource"


def test_leaderboard_page_opens_offline_without_errors(browser, tmp_path):
    site = tmp_path / "leaderboard"
    shutil.copytree(REPO / "leaderboard", site)
    html = (site / "index.html").read_text()
    _no_remote_urls(html)
    browser.open((site / "index.html").as_uri())
    assert browser.errors() == []
    info = browser.evaluate("""({
        tables: document.querySelectorAll('table').length,
        reported: document.querySelectorAll('tr.reported').length,
        imgs: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]),
        text: document.body.innerText})""")
    assert info["tables"] >= 6  # reported + reproduced, three families
    reported = [json.loads(f.read_text()) for f in sorted((REPO / "leaderboard" / "reported").glob("*.json"))]
    assert info["reported"] == sum(len(t["rows"]) for r in reported for t in r["tables"].values())
    assert len(info["imgs"]) >= 5 and all(ok for _, ok in info["imgs"]), info["imgs"]
    assert "Comparability groups" in info["text"] and "never ranked" in info["text"]
    shot = browser.screenshot()
    assert shot.size[0] >= 1200 and len(shot.resize((50, 50)).getcolors(maxcolors=10000) or []) > 20  # something was drawn


def test_run_page_shows_what_the_model_saw_and_where_it_pointed(browser, tmp_path):
    run = tmp_path / "random"
    assert main(["--tasks", "detection,tl_size,ad_measure", "--model", "random", "--limit", "4",
                 "--output", str(run), "--quiet"]) == 0
    assert main(["view", str(run)]) == 0
    page = run / "view" / "index.html"
    _no_remote_urls(page.read_text())
    browser.open(page.as_uri())
    assert browser.errors() == []
    info = browser.evaluate("""({
        cards: document.querySelectorAll('.card').length,
        tables: document.querySelectorAll('table').length,
        plots: Array.from(document.querySelectorAll('img.plot')).filter(i => i.naturalWidth > 0).length,
        gallery: Array.from(document.querySelectorAll('.frame img')).map(i => i.complete && i.naturalWidth > 0),
        prompt: document.querySelector('.card[data-task=detection] details pre').textContent})""")
    rows = {t: [json.loads(x) for x in (run / f"samples_{t}.jsonl").read_text().splitlines()]
            for t in ("detection", "tl_size", "ad_measure")}
    assert info["cards"] == sum(len(r) for r in rows.values())
    assert info["tables"] == 3 and info["plots"] == 4
    assert info["gallery"] and all(info["gallery"])
    assert "bounding box" in info["prompt"]  # the exact prompt text, from plan.jsonl

    # filters: task and status narrow the gallery
    shown = browser.evaluate("""(function(){
        var t = document.getElementById('f-task'); t.value = 'tl_size'; t.dispatchEvent(new Event('input'));
        var n = document.querySelectorAll('.card:not(.hidden)').length;
        t.value = ''; t.dispatchEvent(new Event('input')); return n; })()""")
    assert shown == len(rows["tl_size"])

    # the predicted box is drawn where samples_detection.jsonl says it is
    row = max((r for r in rows["detection"] if r["status"] == "ok"),
              key=lambda r: min(abs(r["values"][2] - r["values"][0]), abs(r["values"][3] - r["values"][1])))
    x1, y1, x2, y2 = row["values"]
    rect = browser.evaluate(f"""(function(){{
        var svg = document.querySelector('.card[data-id="{row["id"]}"] svg');
        svg.scrollIntoView({{block: 'center'}});
        var r = svg.getBoundingClientRect();
        return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; }})()""")
    left, top, width, height = rect
    shot = browser.screenshot({"x": left, "y": top, "width": width, "height": height})
    px = shot.load()

    def near(colour, x, y, r=2):
        return any(all(abs(a - b) < 60 for a, b in zip(px[i, j], colour))
                   for i in range(max(0, x - r), min(shot.size[0], x + r + 1))
                   for j in range(max(0, y - r), min(shot.size[1], y + r + 1)))

    bx0, bx1 = sorted((x1 * width, x2 * width))
    by0, by1 = sorted((y1 * height, y2 * height))
    my, mx = int((by0 + by1) / 2), int((bx0 + bx1) / 2)
    assert near(PRED, int(bx0), my) and near(PRED, int(bx1), my), "left/right edges of the predicted box"
    assert near(PRED, mx, int(by0)) and near(PRED, mx, int(by1)), "top/bottom edges of the predicted box"
    assert not near(PRED, mx, my, r=1), "the box is an outline"
    gx0, gy0, gx1, gy1 = row["target"]
    assert near(GT, int(min(gx0, gx1) * width), int((gy0 + gy1) / 2 * height)), "ground-truth box drawn too"
