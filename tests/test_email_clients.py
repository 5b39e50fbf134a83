"""The digest as mail clients show it, emulated in headless Chromium (Debian's `chromium`, installed by .ci/run):
without its <style> block (Gmail's apps with other accounts, many Android clients, forwarded mail), in Outlook
for Windows' fixed column (conditional comments on, max-width ignored, images at their width attributes), with
images blocked, and in dark mode; and the pre-send checks for what would overflow or look soft.

Chromium will not make a window narrower than 500 pixels, so each page is shown in an iframe of the width under
test, which is a viewport of its own. A probe script in the frame reports computed styles and boxes; contrast is
computed here, from those computed colours, with WCAG 2's formula.
"""

from __future__ import annotations

import dataclasses
import html as html_module
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import html as lxml_html

from newsletter.digest import render_plan, sample_recipient
from newsletter.plan import plan_issue
from newsletter.render import check_html, personalise, render_subject

from .conftest import FIXED_NOW, FIXTURES, ROOT, site_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                    reason="Debian's chromium is not installed (.ci/run installs it)")
WIDE_SITE = FIXTURES / "wide-post-site"

PROBE = r"""<script>
(function () {
  function box(el) { var r = el.getBoundingClientRect(); return {left: r.left, right: r.right, width: r.width,
                                                                  height: r.height}; }
  function own_text(el) {
    var text = "";
    for (var n = el.firstChild; n; n = n.nextSibling) if (n.nodeType === 3) text += n.nodeValue;
    return text.replace(/[\s\u034f\u200c\u00a0]+/g, " ").trim();
  }
  function background(el) {
    for (; el; el = el.parentElement) {
      var c = getComputedStyle(el).backgroundColor;
      if (c && c !== "transparent" && !/rgba\(.*,\s*0\)$/.test(c)) return c;
    }
    return "canvas";
  }
  function hidden(el) {
    for (; el; el = el.parentElement) {
      var s = getComputedStyle(el);
      if (s.display === "none" || s.visibility === "hidden" || s.opacity === "0") return true;
    }
    return false;
  }
  var report = {width: window.innerWidth, scroll: document.documentElement.scrollWidth,
                dark: matchMedia("(prefers-color-scheme: dark)").matches, overflow: [], texts: [], links: [],
                images: [], headings: [], ghost: null};
  var all = document.body.getElementsByTagName("*");
  for (var i = 0; i < all.length; i++) {
    var el = all[i], b = box(el);
    if (hidden(el) || el.tagName === "SCRIPT") continue;
    if (b.right > window.innerWidth + 0.5 || b.left < -0.5)
      report.overflow.push(el.tagName + "." + el.className + " " + Math.round(b.left) + ".." + Math.round(b.right));
    var text = own_text(el), style = getComputedStyle(el);
    if (text && b.width > 0 && b.height > 0)
      report.texts.push({tag: el.tagName, cls: el.className, text: text.slice(0, 40), color: style.color,
                         bg: background(el), size: parseFloat(style.fontSize), weight: parseInt(style.fontWeight)});
    if (el.tagName === "A")
      report.links.push({text: el.textContent.trim(), height: b.height, href: el.getAttribute("href"),
                         excerpt: !!el.closest(".excerpt")});
    if (el.tagName === "IMG")
      report.images.push({alt: el.getAttribute("alt"), width: b.width, right: b.right, size: style.fontSize,
                          color: style.color, bg: background(el)});
    if (/^H[1-3]$/.test(el.tagName))
      report.headings.push({tag: el.tagName, text: el.textContent.trim(), width: b.width, height: b.height});
    if (el.getAttribute("data-ghost") !== null) report.ghost = b;
  }
  parent.document.body.setAttribute("data-probe", JSON.stringify(report));
})();
</script>"""


def show(document: str, width: int, tmp_path: Path, name: str, settings: str = "") -> dict:
    """Lay `document` out in a frame `width` pixels wide and return what the probe saw."""
    assert CHROMIUM, "chromium is required in CI"
    page = tmp_path / f"{name}-{width}.html"
    framed = html_module.escape(document.replace("</body>", PROBE + "</body>"), quote=True)
    page.write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe width="{width}" height="1200" '
                    f'style="border:0" srcdoc="{framed}"></iframe></body></html>', encoding="utf-8")
    flags = [f"--blink-settings={settings}"] if settings else []
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--allow-file-access-from-files", f"--user-data-dir={tmp_path / f'profile-{name}-{width}'}",
         "--window-size=1200,1400", "--virtual-time-budget=3000", *flags, "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    match = re.search(r'data-probe="([^"]+)"', done.stdout)
    assert match, done.stderr[-2000:]
    return json.loads(html_module.unescape(match.group(1)))


def without_style_blocks(document: str) -> str:
    return re.sub(r"(?s)<style\b[^>]*>.*?</style>", "", document)


def as_outlook(document: str) -> str:
    """Roughly what Word's engine does: conditional comments for mso on, no <style> block, max-width ignored,
    images at the size of their width and height attributes."""
    document = re.sub(r"(?s)<!--\[if mso\]>(.*?)<!\[endif\]-->", r"\1", without_style_blocks(document))
    document = document.replace('<table role="presentation" align="center" width="600"',
                                '<table data-ghost role="presentation" align="center" width="600"', 1)
    document = re.sub(r"max-width:[^;\"]*;?", "", document)
    return re.sub(r'(<img[^>]*style=")([^"]*)"', lambda m: m.group(1) + re.sub(r"(?<![-\w])(width|height):[^;]*;?",
                                                                                "", m.group(2)) + '"', document)


def with_local_images(document: str, folder: Path) -> str:
    """The digest's image URLs pointed at the files themselves, so that they load at their real sizes."""
    return re.sub(r'src="https://[^"]+/assets/images/([^"]+)"',
                  lambda m: f'src="{(folder / m.group(1)).as_uri()}"', document)


# -- WCAG 2 contrast -------------------------------------------------------------------------------------------

def rgb(css: str) -> tuple[float, float, float]:
    values = [float(v) for v in re.findall(r"[\d.]+", css)[:3]]
    assert len(values) == 3, css
    return values[0], values[1], values[2]


def luminance(css: str) -> float:
    def channel(value: float) -> float:
        value /= 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb(css))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(foreground: str, background: str) -> float:
    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def below_aa(texts: list[dict]) -> list[str]:
    """Text under WCAG AA: 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold)."""
    failing = []
    for t in texts:
        assert t["bg"] != "canvas", f"{t['text']!r} has no background of its own: it vanishes when inverted"
        large = t["size"] >= 24 or (t["size"] >= 18.66 and t["weight"] >= 700)
        ratio = contrast(t["color"], t["bg"])
        if ratio < (3 if large else 4.5):
            failing.append(f"{t['tag']}.{t['cls']} {t['text']!r}: {t['color']} on {t['bg']} is {ratio:.2f}:1")
    return failing


# -- digests under test ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample():
    from newsletter.config import load_config
    from newsletter.site import read_posts

    config = load_config(ROOT / "newsletter.toml")
    posts = read_posts(config.site, FIXED_NOW).posts
    digest = render_plan(config, plan_issue(config, config.newsletter("weekly"), posts, FIXED_NOW))
    return config, posts, digest, personalise(digest, sample_recipient(config))


def wide_config(templates: Path | None = None):
    from newsletter.config import load_config

    sample_config = load_config(ROOT / "newsletter.toml")
    config = site_config(WIDE_SITE)
    newsletter = dataclasses.replace(sample_config.newsletter("weekly"), id="wide")
    return dataclasses.replace(config, templates=templates or sample_config.templates,
                               newsletters={"wide": newsletter})


def wide_digest(templates: Path | None = None):
    from newsletter.site import read_posts

    config = wide_config(templates)
    posts = read_posts(config.site, FIXED_NOW).posts
    return config, render_plan(config, plan_issue(config, config.newsletter("wide"), posts, FIXED_NOW))


# -- layout -----------------------------------------------------------------------------------------------------

@needs_chromium
@pytest.mark.parametrize("width", [375, 600])
def test_without_its_style_block_the_sample_fits_the_screen(sample, tmp_path, width):
    document = with_local_images(without_style_blocks(sample[3].html), ROOT / "site" / "assets" / "images")
    probe = show(document, width, tmp_path, "nostyle")
    assert probe["scroll"] <= width
    assert probe["overflow"] == []
    assert len(probe["images"]) == 7 and all(i["right"] <= width - 16 for i in probe["images"])
    assert len(probe["headings"]) == 1 + 5 + 10  # masthead, top story and four sections, ten stories


@needs_chromium
def test_in_outlooks_fixed_column_nothing_is_wider_than_600_pixels(sample, tmp_path):
    probe = show(with_local_images(as_outlook(sample[3].html), ROOT / "site" / "assets" / "images"), 1000,
                 tmp_path, "outlook")
    assert probe["ghost"]["width"] == 600
    right = probe["ghost"]["left"] + 600
    assert [i["right"] for i in probe["images"] if i["right"] > right] == []
    assert probe["scroll"] <= 1000


@needs_chromium
@pytest.mark.parametrize("width", [375, 600])
def test_a_post_with_a_1600_pixel_image_and_a_wide_table_still_fits(tmp_path, width):
    config, digest = wide_digest()
    document = personalise(digest, sample_recipient(config)).html
    local = WIDE_SITE / "assets" / "images"
    for name, variant in (("styled", document), ("nostyle", without_style_blocks(document))):
        probe = show(with_local_images(variant, local), width, tmp_path, name)
        assert probe["overflow"] == [], name
        assert probe["scroll"] <= width, name
        chart = [i for i in probe["images"] if i["alt"].startswith("Tide heights")]
        assert len(chart) == 1 and chart[0]["width"] <= width - 32, name


@needs_chromium
def test_the_1600_pixel_image_keeps_to_outlooks_column_by_its_width_attribute(tmp_path):
    config, digest = wide_digest()
    document = with_local_images(as_outlook(personalise(digest, sample_recipient(config)).html),
                                 WIDE_SITE / "assets" / "images")
    probe = show(document, 1000, tmp_path, "outlook-wide")
    right = probe["ghost"]["left"] + 600
    chart = [i for i in probe["images"] if i["alt"].startswith("Tide heights")]
    assert chart[0]["width"] == 552
    assert [i for i in probe["images"] if i["right"] > right] == []


# -- images off, dark mode, tap targets --------------------------------------------------------------------------

@needs_chromium
@pytest.mark.parametrize("width", [375, 600])
def test_with_images_blocked_the_stories_still_read(tmp_path, width):
    config, digest = wide_digest()
    probe = show(personalise(digest, sample_recipient(config)).html, width, tmp_path, "noimages",
                 "imagesEnabled=false")
    titles = [h["text"] for h in probe["headings"] if h["tag"] == "H3"]
    assert titles == ["A century of tide tables", "A short note from the quay"]
    assert [h for h in probe["headings"] if not (h["height"] > 0 and h["width"] <= width)] == []
    assert probe["overflow"] == []
    described = [i for i in probe["images"] if i["alt"].startswith("The harbour wall")][0]
    # the alt text is styled like body text, on the image cell's own background, readably
    assert described["size"] == "16px" and described["bg"] != "canvas"
    assert contrast(described["color"], described["bg"]) >= 4.5
    assert below_aa(probe["texts"]) == []


@needs_chromium
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_keeps_wcag_aa_contrast_in_light_and_dark_mode(sample, tmp_path, scheme):
    probe = show(sample[3].html, 600, tmp_path, scheme, "preferredColorScheme=0" if scheme == "dark" else "")
    assert probe["dark"] is (scheme == "dark")
    body = [t for t in probe["texts"] if t["cls"] == "masthead"][0]
    assert (luminance(body["bg"]) < 0.05) is (scheme == "dark")  # the dark block did apply
    assert len(probe["texts"]) > 40
    assert below_aa(probe["texts"]) == []


@needs_chromium
def test_every_link_outside_the_excerpts_is_a_44_pixel_tap_target(sample, tmp_path):
    probe = show(sample[3].html, 375, tmp_path, "taps")
    targets = [link for link in probe["links"] if not link["excerpt"]]
    assert len(targets) == 2 * 10 + 3
    assert [(t["text"], t["height"]) for t in targets if t["height"] < 44] == []


# -- the pre-send checks ----------------------------------------------------------------------------------------

def test_the_check_warns_about_the_wide_table_and_names_the_post():
    _, digest = wide_digest()
    messages = [p.message for p in digest.checks]
    assert messages == [
        "image 'https://wide.example.org/assets/images/quay-640.png' in “A short note from the quay” is 640 pixels "
        "wide and shown 552 wide: soft on high-density screens; use a file at least 1104 pixels wide",
        "a table in “A century of tide tables” needs about 608 pixels even with every word on a line of its own, "
        "more than the 552-pixel column: Outlook widens the email for it and phones squeeze it; shorten it, or "
        "leave it out of the excerpt and link to it",
    ]


def test_without_fitted_images_the_check_catches_the_1600_pixel_image(tmp_path):
    template = (ROOT / "templates" / "digest.html.j2").read_text(encoding="utf-8")
    assert "fit_images(post.excerpt_html, column)" in template
    (tmp_path / "digest.html.j2").write_text(template.replace("fit_images(post.excerpt_html, column)",
                                                              "post.excerpt_html"), encoding="utf-8")
    _, digest = wide_digest(tmp_path)
    assert [p.message for p in digest.checks if "tide-chart" in p.message] == [
        "image 'https://wide.example.org/assets/images/tide-chart-1600.png' in “A century of tide tables” has no "
        "width attribute: Outlook shows it at its file's own size, which can be wider than the 552-pixel column; "
        "give it width=\"552\" or less"]


def test_images_wider_than_their_column_or_soft_on_retina_screens_are_reported():
    page = ('<html><body><table role="presentation" width="600"><tr><td class="card" style="padding:0 24px">'
            '<h3 class="card-title">Story</h3><img src="https://x.org/wide.png" alt="" width="640">'
            '<img src="https://x.org/soft.png" alt="" width="552"><img src="https://x.org/sharp.png" alt="" '
            'width="552"></td></tr></table></body></html>')
    sizes = {"https://x.org/soft.png": (1000, 500), "https://x.org/sharp.png": (1104, 552)}
    assert [p.message for p in check_html(page, "t")] == [
        "image 'https://x.org/wide.png' in “Story” is 640 pixels wide: Outlook does not shrink it, so it overflows "
        "the 552-pixel column; give it width=\"552\" or less"]
    assert [p.message for p in check_html(page, "t", sizes)][1:] == [
        "image 'https://x.org/soft.png' in “Story” is 1000 pixels wide and shown 552 wide: soft on high-density "
        "screens; use a file at least 1104 pixels wide"]


def test_the_sample_passes_the_new_checks_with_its_1280_pixel_images(sample):
    assert sample[2].checks == ()


# -- structure: accessibility, Outlook, dark mode, the lead story ---------------------------------------------

def test_the_head_has_outlooks_block_dark_mode_and_no_data_detectors(sample):
    document = sample[3].html
    assert "<o:PixelsPerInch>96</o:PixelsPerInch>" in re.search(r"(?s)<!--\[if mso\]>.*?<!\[endif\]-->",
                                                                   document).group(0)
    tree = lxml_html.document_fromstring(document)
    metas = {m.get("name"): m.get("content") for m in tree.iter("meta") if m.get("name")}
    assert metas["color-scheme"] == "light dark" and metas["supported-color-schemes"] == "light dark"
    assert metas["format-detection"] == "telephone=no, date=no, address=no, email=no, url=no"
    styles = "".join(s.text for s in tree.iter("style"))
    assert "@media (prefers-color-scheme: dark)" in styles
    assert "a[x-apple-data-detectors]" in styles and "u + #body a" in styles
    assert tree.body.get("id") == "body"


def test_the_content_wrapper_carries_lang_and_dir_and_the_layout_is_fluid(sample):
    tree = lxml_html.document_fromstring(sample[3].html)
    container = tree.find_class("container")[0]
    assert (container.get("lang"), container.get("dir")) == ("en", "ltr")
    style = container.get("style").replace(" ", "")
    assert "width:100%" in style and "max-width:600px" in style
    for image in tree.find_class("card-image"):
        assert image.get("width") == "552" and "width:100%" in image.get("style").replace(" ", "")


def test_headings_links_and_alt_text(sample):
    config, posts, digest, personal = sample
    tree = lxml_html.document_fromstring(personal.html)
    order = [(h.tag, h.text_content()) for h in tree.iter("h1", "h2", "h3")]
    assert order[:3] == [("h1", "Harbourlight Weekly"), ("h2", "Top story"), ("h3", posts[0].title)]
    assert [tag for tag, _ in order].count("h3") == 10
    for card in tree.find_class("card"):
        title = card.find_class("card-title")[0].text_content()
        links = [a for a in card.iter("a") if not any("excerpt" in (p.get("class") or "") for p in a.iterancestors())]
        assert len(links) == 2 and len({a.get("href") for a in links}) == 1
        assert links[1].text_content() == f"Read more about “{title}”"
    # the sample's images have no image_alt: decorative beside the title, so empty alt, never the title again
    assert {i.get("alt") for i in tree.find_class("card-image")} == {""}
    wide = lxml_html.document_fromstring(wide_digest()[1].html)
    assert [i.get("alt") for i in wide.find_class("card-image")] == [
        "The harbour wall at low tide, with the brass tide staff on the left", ""]


def test_body_text_is_16_pixels(sample):
    tree = lxml_html.document_fromstring(sample[3].html)
    for excerpt in tree.find_class("excerpt"):
        assert "font-size:16px" in excerpt.get("style").replace(" ", "")


def test_the_lead_story_is_the_subjects_and_comes_first(sample):
    config, posts, digest, personal = sample
    tree = lxml_html.document_fromstring(personal.html)
    first = tree.find_class("card-title")[0].text_content()
    assert digest.subject == f"Harbourlight Weekly: {first} and 9 more"
    assert tree.find_class("preheader")[0].text_content().startswith(posts[0].excerpt[:40])
    spacer = tree.find_class("preheader")[1].text_content()
    assert set(spacer) == {"\u034f", "\u200c", "\u00a0"} and len(spacer) == 240
    # the lead is not shown twice: its own section (Science) carries only the other two
    assert len([t for t in tree.find_class("card-title") if t.text_content() == first]) == 1


def test_the_sample_subject_reads_well_for_one_post_and_for_many(sample):
    config, posts, _, _ = sample
    template = config.newsletter("weekly").subject
    context = {"newsletter": {"title": "Harbourlight Weekly"}}
    assert render_subject(template, {**context, "posts": [{"title": "Only one"}]}) == "Harbourlight Weekly: Only one"
    assert (render_subject(template, {**context, "posts": [{"title": "Lead"}, {"title": "B"}]})
            == "Harbourlight Weekly: Lead and 1 more")


def test_the_text_part_is_wrapped_at_72_with_titles_set_apart_and_each_link_once(sample):
    config, posts, digest, personal = sample
    lines = personal.text.split("\n")
    assert [line for line in lines if len(line) > 72 and " " in line] == []
    for post in posts[:10]:
        index = lines.index(post.title)
        assert lines[index + 1] == "-" * len(post.title)
        assert personal.text.count(post.link) == 1
    for link in ("https://harbourlight.example.org/unsubscribe/preview",
                 "https://harbourlight.example.org/preferences/preview",
                 "https://harbourlight.example.org/archive/weekly/2026-01-05/"):
        assert personal.text.count(link) == 1


def test_fit_images_keeps_proportions_and_leaves_small_images_alone():
    from newsletter.render import fit_images

    fitted = lxml_html.fragment_fromstring(str(fit_images(
        '<p>a &amp; b</p><img src="https://x.org/big.png" width="1600" height="900" alt="">'
        '<img src="https://x.org/small.png" width="120" height="40" alt=""><img src="https://x.org/any.png" '
        'height="300" alt=""><table><tr><td>1</td></tr></table>', 552)), create_parent="div")
    assert [(i.get("width"), i.get("height")) for i in fitted.iter("img")] == [("552", "310"), ("120", "40"),
                                                                                ("552", None)]
    assert fitted.find("table").get("width") == "100%"
    assert fitted.find("p").text == "a & b"
    assert str(fit_images("<p>no images</p>", 552)) == "<p>no images</p>"
