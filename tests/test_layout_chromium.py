"""The digest's layout in a real browser engine: headless Chromium (Debian's `chromium`, installed by .ci/run).

At a 375-pixel phone width nothing may scroll sideways; at desktop width the container is 600 pixels wide.
Headless Chromium will not make a window narrower than 500 pixels, so the digest is shown in an iframe of the
width under test, which is a viewport of its own for the media query.
"""

from __future__ import annotations

import html as html_module
import json
import os
import re
import shutil
import subprocess

import pytest

from newsletter.digest import render_plan, sample_recipient
from newsletter.plan import plan_issue
from newsletter.render import personalise

from .conftest import FIXED_NOW

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="Debian's chromium is not installed (.ci/run installs it)")
PROBE = """<script>
parent.document.body.setAttribute("data-probe", JSON.stringify({
  scroll: document.documentElement.scrollWidth,
  container: document.querySelector(".container").getBoundingClientRect().width,
  image: document.querySelector(".card-image").getBoundingClientRect().width}));
</script>"""


def measure(html: str, width: int, tmp_path) -> dict:
    page = tmp_path / f"digest-{width}.html"
    framed = html_module.escape(html.replace("</body>", PROBE + "</body>"), quote=True)
    page.write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe width="{width}" height="900" '
                    f'style="border:0" srcdoc="{framed}"></iframe></body></html>', encoding="utf-8")
    assert CHROMIUM, "chromium is required in CI"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / f'profile-{width}'}", "--window-size=1200,1000",
         "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    match = re.search(r'data-probe="([^"]+)"', done.stdout)
    assert match, done.stderr[-2000:]
    return json.loads(html_module.unescape(match.group(1)))


@pytest.fixture(scope="module")
def weekly_html():
    from newsletter.config import load_config
    from newsletter.site import read_posts

    from .conftest import ROOT

    config = load_config(ROOT / "newsletter.toml")
    posts = read_posts(config.site, FIXED_NOW).posts
    digest = render_plan(config, plan_issue(config, config.newsletter("weekly"), posts, FIXED_NOW))
    return personalise(digest, sample_recipient(config)).html


def test_no_sideways_scrolling_at_phone_width(weekly_html, tmp_path):
    probe = measure(weekly_html, 375, tmp_path)
    assert probe["scroll"] <= 375
    assert probe["container"] == 375
    assert probe["image"] == 375 - 32


def test_the_desktop_layout_is_600_pixels(weekly_html, tmp_path):
    probe = measure(weekly_html, 1000, tmp_path)
    assert probe["container"] == 600
    assert probe["image"] == 552
    assert probe["scroll"] <= 1000
