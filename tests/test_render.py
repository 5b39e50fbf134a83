"""The renderer: templates, escaping, CSS inlining without the network, personal fields, and the checks."""

from __future__ import annotations

import dataclasses

import pytest
from lxml import html as lxml_html

from newsletter import render
from newsletter.digest import render_plan, sample_recipient
from newsletter.errors import RenderError
from newsletter.plan import plan_issue
from newsletter.render import Recipient, check_html, inline_css, personalise
from newsletter.site import read_posts

from .conftest import FIXED_NOW, FIXTURES, site_config
from .servers import recording_http_server


@pytest.fixture
def weekly(sample_config, sample_posts):
    plan = plan_issue(sample_config, sample_config.newsletter("weekly"), sample_posts, FIXED_NOW)
    return render_plan(sample_config, plan)


def parse(document: str):
    return lxml_html.document_fromstring(document)


def test_the_sample_weekly_has_a_card_per_post_in_sections(weekly):
    tree = parse(personalise(weekly, Recipient("a@example.org")).html)
    assert [h.text_content() for h in tree.xpath("//h2[@class='section-title']")] == [
        "Top story", "Culture", "Science", "Technology", "Travel"]
    titles = [a.text_content() for a in tree.xpath("//h3[@class='card-title']/a")]
    assert titles == ["Measuring sea level by hand", "The Saturday market returns",
                      "New Year's Eve fireworks move to the beach", "Why the sea glows in January",
                      "The library lends telescopes", "A sensor for every mooring", "A year of harbour data",
                      "Mesh radio for the fishing fleet", "An island day trip in winter", "The ferry timetable for 2026"]
    first = tree.xpath("//h3[@class='card-title']/a")[0]
    assert first.get("href") == "https://harbourlight.example.org/science/2026/01/04/measuring-sea-level-by-hand/"
    assert tree.find_class("masthead")[0].text_content() == "Harbourlight Weekly"
    assert tree.find_class("issue-date")[0].text_content() == "Issue 1 · 5 January 2026"
    meta = tree.find_class("meta")[0].text_content()
    assert meta == "Tobias Wren · 4 January 2026"


def test_images_have_absolute_urls_layout_width_height_from_the_file_and_alt(weekly):
    tree = parse(weekly.html)
    image = tree.find_class("card-image")[0]
    assert image.get("src") == ("https://harbourlight.example.org/assets/images/"
                                "c1c16452b04650ea34d1463da2739f3b.jpg")
    # the file is 1280x720; at the layout's 552 pixels that is 310.5, rounded half to even. The title follows
    # the image, so without an image_alt in the front matter the image is decorative: empty alt.
    assert (image.get("width"), image.get("height"), image.get("alt")) == ("552", "310", "")
    assert len(tree.find_class("card-image")) == 7


def test_css_is_inlined_with_media_query_and_important_kept(weekly):
    tree = parse(weekly.html)
    container = tree.find_class("container")[0]
    assert "max-width:600px" in container.get("style").replace(" ", "")
    styles = [s.text for s in tree.iter("style")]
    assert len(styles) == 2 and "@media only screen and (max-width: 620px)" in styles[0]
    assert "padding-left: 16px !important" in styles[0]
    assert "a[x-apple-data-detectors]" in styles[1]
    assert "display:none !important" in tree.find_class("preheader")[0].get("style")


def test_the_preheader_is_the_newest_posts_excerpt(weekly):
    preheader = parse(weekly.html).find_class("preheader")[0].text_content()
    assert preheader == ("Students from the college repeated the 1925 tide readings with the same brass staff "
                         "and compared them with the electronic gauge.")


def test_inlining_never_fetches_a_stylesheet_or_an_import():
    with recording_http_server() as (base, requests):
        document = (f'<html><head><link rel="stylesheet" href="{base}/linked.css"><style>@import url("{base}/i.css");'
                    f'@import "{base}/j.css"; p {{ color: red }}</style></head><body><p>x</p></body></html>')
        out = inline_css(document)
    assert requests == []
    assert parse(out).xpath("//p")[0].get("style") == "color:red"


def test_post_content_cannot_bring_a_stylesheet_into_the_digest(sample_config):
    config = site_config(FIXTURES / "hostile-site")
    config = dataclasses.replace(config, templates=sample_config.templates,
                                 newsletters={"n": dataclasses.replace(sample_config.newsletter("weekly"), id="n")})
    posts = read_posts(config.site, FIXED_NOW).posts
    plan = plan_issue(config, config.newsletter("n"), posts, FIXED_NOW, since=posts[-1].date.replace(year=2024))
    html = render_plan(config, plan).html
    tree = parse(html)
    assert tree.xpath("//link|//script|//form|//iframe") == []
    assert not any(attr.startswith("on") for el in tree.iter() if isinstance(el.tag, str) for attr in el.attrib)
    assert "javascript:" not in html.lower().replace("[click me](javascript:alert(1))", "")


def test_titles_are_escaped_in_html_and_raw_in_text(sample_config):
    config = site_config(FIXTURES / "jekyll" / "site")
    config = dataclasses.replace(config, templates=sample_config.templates,
                                 newsletters={"n": dataclasses.replace(sample_config.newsletter("weekly"), id="n")})
    posts = [p for p in read_posts(config.site, FIXED_NOW).posts if p.slug == "title-with-markup"]
    plan = plan_issue(config, config.newsletter("n"), posts, FIXED_NOW, since=posts[0].date.replace(year=2000))
    digest = render_plan(config, plan)
    assert "Re: Hello &amp; &lt;World&gt;" in digest.html
    assert parse(digest.html).xpath("//h3/a")[0].text_content() == "Re: Hello & <World>"
    assert "\nRe: Hello & <World>\n" in digest.text


def test_personal_fields_are_escaped_for_their_context(weekly):
    evil = Recipient(email="o'brien@example.org", name='Eve <script>"x"</script>',
                     unsubscribe_url='https://n.example.org/unsubscribe/a"b<c>',
                     preferences_url="https://n.example.org/preferences/t?a=1&b=2")
    personal = personalise(weekly, evil)
    tree = parse(personal.html)
    links = {a.text_content(): a.get("href") for a in tree.find_class("footer")[0].iter("a")}
    assert links == {"Unsubscribe": 'https://n.example.org/unsubscribe/a"b<c>',
                     "Preferences": "https://n.example.org/preferences/t?a=1&b=2",
                     "View in your browser": "https://harbourlight.example.org/archive/weekly/2026-01-05/"}
    assert "<script>" not in personal.html
    assert "at o'brien@example.org because" in tree.find_class("footer")[0].text_content()
    assert "Unsubscribe:\nhttps://n.example.org/unsubscribe/a\"b<c>\n" in personal.text
    assert "XNLFIELD" not in personal.html + personal.text + personal.subject


def test_inlining_runs_once_per_digest_not_per_recipient(sample_config, sample_posts, monkeypatch):
    calls = []
    original = render.inline_css
    monkeypatch.setattr(render, "inline_css", lambda doc: calls.append(1) or original(doc))
    plan = plan_issue(sample_config, sample_config.newsletter("lab"), sample_posts, FIXED_NOW)
    digest = render_plan(sample_config, plan)
    copies = [personalise(digest, Recipient(f"r{i}@example.org", f"Reader {i}", f"https://u/{i}", f"https://p/{i}"))
              for i in range(50)]
    assert len(calls) == 1
    assert len({c.html for c in copies}) == 50


def test_plain_text_comes_from_the_posts(weekly):
    text = personalise(weekly, sample_recipient_for_tests()).text
    assert "<" not in text.replace("<World>", "")
    assert ("== Top story ==\n\nMeasuring sea level by hand\n---------------------------\nTobias Wren, 4 January 2026\n\n"
            in text)
    assert "Read more:\nhttps://harbourlight.example.org/science/2026/01/04/measuring-sea-level-by-hand/\n" in text
    assert text.endswith("Unsubscribe:\nhttps://harbourlight.example.org/unsubscribe/preview\n")


def sample_recipient_for_tests():
    from newsletter.config import load_config

    from .conftest import ROOT

    return sample_recipient(load_config(ROOT / "newsletter.toml"))


def test_checks_report_clipping_style_size_and_images():
    big = "<html><head><style>" + "p{color:red}" * 1500 + "</style></head><body>" + "x" * 110_000 + (
        '<img src="/relative.png" alt="ok" width="100"><img src="https://x.org/a.png" width="100"></body></html>')
    assert [p.message for p in check_html(big, "t.html.j2")] == [
        "the HTML is 125 KB; Gmail clips messages over 102 KB (lower max_posts or shorten excerpts)",
        "the <style> block is 18 KB; Gmail drops it over 16 KB",
        "image '/relative.png' has no absolute URL; set [site] url",
        "image 'https://x.org/a.png' has no alt text",
    ]
    assert check_html("<html><body><img src='https://x.org/a.png' alt='A' width='600'></body></html>", "t") == []


def test_the_sample_digest_passes_its_checks(weekly):
    assert weekly.checks == ()


def test_template_errors_name_the_template_and_line(sample_config, sample_posts, tmp_path):
    (tmp_path / "broken.html.j2").write_text("line one\n{% for x in %}\n")
    (tmp_path / "typo.html.j2").write_text("{{ newsleter.title }}")
    (tmp_path / "typo.txt.j2").write_text("")
    for name, message in [
        ("broken", f"{tmp_path}/broken.html.j2:2: template syntax error: Expected an expression, got 'end of "
                   "statement block'"),
        ("typo", f"{tmp_path}/typo.html.j2:1: 'newsleter' is undefined; see the README for the names templates "
                 "can use"),
        ("absent", f"template 'absent.html.j2' not found in {tmp_path}"),
    ]:
        newsletter = dataclasses.replace(sample_config.newsletter("lab"), template=name)
        plan = plan_issue(sample_config, newsletter, sample_posts, FIXED_NOW)
        config = dataclasses.replace(sample_config, templates=tmp_path)
        with pytest.raises(RenderError) as caught:
            render_plan(config, plan)
        assert str(caught.value) == message


def marker_site(sample_config, templates=None):
    config = site_config(FIXTURES / "marker-site")
    newsletter = dataclasses.replace(sample_config.newsletter("weekly"), id="m", subject="{{ posts[-1].title }}")
    config = dataclasses.replace(config, templates=templates or sample_config.templates,
                                 newsletters={"m": newsletter})
    posts = {p.slug: p for p in read_posts(config.site, FIXED_NOW).posts}
    return config, newsletter, posts


def digest_of_posts(config, newsletter, posts):
    plan = plan_issue(config, newsletter, posts, FIXED_NOW, since=posts[-1].date.replace(year=2024))
    return render_plan(config, plan)


READER = Recipient("reader@example.org", "Reader", "https://n.example.org/u/tok", "https://n.example.org/p/tok")


def test_a_marker_in_a_title_never_becomes_the_subscribers_address(sample_config):
    config, newsletter, posts = marker_site(sample_config)
    personal = personalise(digest_of_posts(config, newsletter, [posts["title-with-email-marker"]]), READER)
    title = "Write to X\u2060NLFIELDemailXNLEND today"
    assert personal.subject == title
    assert [a.text_content() for a in parse(personal.html).xpath("//h3/a")] == [title]
    assert f"\n{title}\n" in personal.text
    assert personal.html.count("reader@example.org") == personal.text.count("reader@example.org") == 1  # footers


def test_a_marker_in_an_excerpt_never_becomes_the_unsubscribe_link(sample_config):
    config, newsletter, posts = marker_site(sample_config)
    personal = personalise(digest_of_posts(config, newsletter, [posts["excerpt-with-unsubscribe-marker"]]), READER)
    excerpt = parse(personal.html).find_class("excerpt")[0]
    assert [a.get("href") for a in excerpt.iter("a")] == [
        "https://markers.example.org/2025/06/02/excerpt-with-unsubscribe-marker/X\u2060NLFIELDunsubscribe_urlXNLEND"]
    assert "see X\u2060NLFIELDunsubscribe_urlXNLEND." in excerpt.text_content()
    assert personal.html.count("https://n.example.org/u/tok") == personal.text.count("https://n.example.org/u/tok") == 1


def test_an_unknown_marker_and_sendgrid_tags_in_content_stay_visible(sample_config):
    config, newsletter, posts = marker_site(sample_config)
    digest = digest_of_posts(config, newsletter, [posts["unknown-marker"], posts["sendgrid-tag"]])
    personal = personalise(digest, READER)
    titles = [a.text_content() for a in parse(personal.html).xpath("//h3/a")]
    assert titles == ["Hello %\u2060nl_html_email% and %\u2060NL_text_name%", "An X\u2060NLFIELDfooXNLEND marker"]
    assert "SendGrid fills in %\u2060nl_html_unsubscribe_url% wherever it is." in personal.text


def test_content_split_across_fields_cannot_spell_a_marker(sample_config, tmp_path):
    (tmp_path / "digest.html.j2").write_text("{% for p in posts %}<p>{{ p.title }}{{ p.author }}{{ p.data.tag_line }}"
                                             "</p>{% endfor %}<p>{{ subscriber.email }}</p>")
    (tmp_path / "digest.txt.j2").write_text("{% for p in posts %}{{ p.title }}{{ p.author }}{{ p.data.tag_line }}"
                                            "{% endfor %}\n")
    config, newsletter, posts = marker_site(sample_config, templates=tmp_path)
    personal = personalise(digest_of_posts(config, newsletter, [posts["marker-split-across-fields"]]), READER)
    assert personal.text == "X\u2060NLFIELDemailXNLEND"
    assert [p.text_content() for p in parse(personal.html).iter("p")] == ["X\u2060NLFIELDemailXNLEND",
                                                                          "reader@example.org"]


def test_only_the_renderings_own_placeholders_become_markers():
    """Text looking like another rendering's placeholder (it came from content) stays as it is."""
    ours, other = "0123456789abcdef", "fedcba9876543210"
    sealed = render._seal(f"{render._placeholder(ours, 'email')} {render._placeholder(other, 'name')}", ours, "t")
    assert sealed == f"{render.marker('email')} {render._placeholder(other, 'name')}"


def test_a_personal_field_through_a_filter_is_an_error_naming_the_template(sample_config, sample_posts, tmp_path):
    (tmp_path / "digest.html.j2").write_text("<p>{{ subscriber.name|upper }}</p>")
    (tmp_path / "digest.txt.j2").write_text("")
    config = dataclasses.replace(sample_config, templates=tmp_path)
    plan = plan_issue(config, config.newsletter("lab"), sample_posts, FIXED_NOW)
    with pytest.raises(RenderError, match=r"^digest.html.j2: a personal field \(subscriber.name, subscriber.email, "
                                          r"unsubscribe_url, preferences_url\) went through a filter or test; use it "
                                          r"as it is, like \{\{ subscriber.email \}\}"):
        render_plan(config, plan)


@pytest.mark.parametrize("subject", [
    "{{ cycler.__init__.__globals__.os.environ.SENDGRID_API_KEY }}",
    "{{ lipsum.__globals__['os'].popen('echo pwned').read() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
])
def test_the_subject_runs_in_the_sandbox(sample_config, sample_posts, monkeypatch, subject):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.secret-key")
    newsletter = dataclasses.replace(sample_config.newsletter("lab"), subject=subject)
    plan = plan_issue(sample_config, newsletter, sample_posts, FIXED_NOW)
    with pytest.raises(RenderError) as caught:
        render_plan(sample_config, plan)
    message = str(caught.value)
    assert message.startswith("newsletters.lab.subject:1: unsafe, refused by the template sandbox: access to "
                              "attribute '__")
    assert message.endswith("object is unsafe; templates may only use the names listed in the README")
    assert "SG.secret-key" not in message and "pwned" not in message


def test_a_template_file_runs_in_the_sandbox_and_runtime_errors_name_the_line(sample_config, sample_posts, tmp_path):
    (tmp_path / "digest.txt.j2").write_text("")
    config = dataclasses.replace(sample_config, templates=tmp_path)
    plan = plan_issue(config, config.newsletter("lab"), sample_posts, FIXED_NOW)
    for body, message in [
        ("<p>\n{{ lipsum.__globals__['os'].system('true') }}</p>",
         "digest.html.j2:2: unsafe, refused by the template sandbox: access to attribute '__globals__' of "
         "'function' object is unsafe; templates may only use the names listed in the README"),
        ("<p>\n\n{{ 1 / 0 }}</p>", "digest.html.j2:3: ZeroDivisionError: division by zero"),
    ]:
        (tmp_path / "digest.html.j2").write_text(body)
        with pytest.raises(RenderError) as caught:
            render_plan(config, plan)
        assert str(caught.value) == f"{tmp_path}/{message}"
