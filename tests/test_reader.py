"""The reader's edge cases beyond Jekyll's own view: bad posts, plain folders, images, hostile excerpts."""

from __future__ import annotations

from datetime import datetime, timezone

from newsletter.posts import split_front_matter
from newsletter.site import read_posts

from .conftest import FIXTURES, ROOT, site_config

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def read(folder: str, **overrides):
    config = site_config(FIXTURES / folder, **overrides)
    return read_posts(config.site, NOW)


def by_name(posts):
    return {post.path.rsplit("/", 1)[-1]: post for post in posts}


def test_each_broken_post_is_reported_with_file_line_and_reason_and_the_valid_one_survives():
    result = read("broken-site")
    assert [p.path for p in result.posts] == ["_posts/2025-03-01-valid-post.md"]
    reported = {(p.where.rsplit("/", 1)[-1], p.line): p.message for p in result.problems}
    assert reported == {
        ("2025-03-02-invalid-yaml.md", 4):
            "invalid YAML front matter: did not find expected ',' or ']' (while parsing a flow sequence at line 3)",
        ("2025-03-03-invalid-date.md", 3):
            "invalid date 'next tuesday' in front matter; write it like 2025-07-22T12:00:26",
        ("2025-03-04-not-utf8.md", 5): "not valid UTF-8 (byte 32); save the file as UTF-8",
        ("2025-03-05-front-matter-is-a-list.md", 2):
            "front matter must be a mapping of keys to values, not a list",
        ("2025-03-06-binary.md", None): "binary file, not a text post",
        ("2025-13-45-impossible-file-name-date.md", None):
            "invalid date '2025-13-45' in the file name: month must be in 1..12",
    }
    assert all(p.where.startswith(str(FIXTURES / "broken-site" / "_posts")) or
               p.where.startswith("tests/fixtures/broken-site/_posts/") for p in result.problems)


def test_plain_folder_dates_from_front_matter_or_name_and_skips_drafts_and_undated():
    result = read("plain-folder")
    posts = by_name(result.posts)
    assert sorted(posts) == ["2025-05-01-dated-by-name.md", "undated-name.md"]
    named = posts["2025-05-01-dated-by-name.md"]
    assert (named.slug, named.date.isoformat(), named.categories) == ("dated-by-name", "2025-05-01T00:00:00+00:00",
                                                                      ("Notes",))
    fronted = posts["undated-name.md"]
    # not a Jekyll site: a naive front-matter datetime is wall-clock time in the site zone
    assert fronted.date.isoformat() == "2025-05-02T09:30:00+00:00"
    assert fronted.tags == ("Hugo", "style")
    assert fronted.url == "/2025/05/02/undated-name.html"
    assert [(p.where.rsplit("/", 1)[-1], p.message) for p in result.problems] == [
        ("no-date-at-all.md", "no date: add `date:` to the front matter or name the file YYYY-MM-DD-slug.md")]


def test_plain_folder_naive_dates_follow_the_site_time_zone():
    posts = by_name(read("plain-folder", timezone=__import__("zoneinfo").ZoneInfo("Asia/Tokyo")).posts)
    assert posts["undated-name.md"].date.isoformat() == "2025-05-02T09:30:00+09:00"


def test_future_posts_are_hidden_unless_the_site_sets_future():
    hidden = by_name(read("jekyll/site").posts)
    shown = by_name(read("jekyll/site", future=True).posts)
    assert "2030-01-01-future-post.md" not in hidden
    assert shown["2030-01-01-future-post.md"].date.isoformat() == "2030-01-01T00:00:00-05:00"


def test_drafts_unpublished_and_special_files_are_never_posts():
    names = set(by_name(read("jekyll/site").posts))
    assert not names & {"2025-08-15-a-draft.md", "2025-08-02-published-false.md", ".2025-08-16-hidden.md",
                        "_2025-08-16-underscore.md"}


def test_bom_crlf_and_dot_closed_front_matter_are_read_as_jekyll_reads_them():
    data, content = split_front_matter(b"\xef\xbb\xbf---\r\ntitle: X\r\n...\r\n\r\nBody\r\n")
    assert data == {"title": "X"}
    assert content == "\nBody\n"
    posts = by_name(read("jekyll/site").posts)
    crlf = posts["2025-07-23-bom-and-crlf.md"]
    assert (crlf.title, crlf.categories) == ("A byte-order mark and CRLF line endings", ("Notes",))
    assert crlf.excerpt == "First paragraph with Windows line endings."
    dots = posts["2025-07-24-closed-with-dots.md"]
    assert dots.excerpt == "First paragraph after a YAML document end marker."


def test_images_are_absolute_with_alt_from_front_matter_and_local_files_found():
    posts = by_name(read("jekyll/site").posts)
    typical = posts["2025-07-22-typical-news-post.md"]
    assert typical.image == "https://example.org/blog/assets/images/0123456789abcdef0123456789abcdef.jpg"
    assert typical.image_alt is None and typical.image_file(FIXTURES / "jekyll" / "site") is None
    mapped = posts["2025-08-19-image-mapping.md"]
    assert (mapped.image, mapped.image_alt) == ("https://example.org/blog/assets/images/map.png", "A map of the area")
    hostile = by_name(read("hostile-site").posts)
    assert hostile["2025-04-09-image-protocol-relative.md"].image == "https://cdn.example.net/pic.png"
    assert hostile["2025-04-10-image-absolute-url.md"].image == "https://images.example.net/a.jpg"
    climbing = hostile["2025-04-11-image-outside-site.md"]
    assert (climbing.image, climbing.image_path) == ("https://hostile.example.org/b/etc/hostname", "etc/hostname")
    assert climbing.image_file(FIXTURES / "hostile-site") is None
    sample = site_config(ROOT / "site")
    found = by_name(read_posts(sample.site, NOW).posts)["2025-12-30-mesh-radio-for-the-fishing-fleet.md"]
    assert found.image_file(ROOT / "site") == ROOT / "site/assets/images/de83e9b3d38c7a88b21f6ee0ef1d3647.jpg"


def test_excerpts_are_sanitised():
    posts = by_name(read("hostile-site").posts)
    html = {name: post.excerpt_html for name, post in posts.items()}
    assert html["2025-04-01-script-in-excerpt.md"] == "<p>Before  after.</p>"
    assert html["2025-04-02-event-handler.md"] == "<p>Click <b>here</b></p>"
    assert html["2025-04-03-javascript-link.md"] == (
        '<p>[Click me](javascript:alert(1)) and <a href="https://ok.example.net/" rel="noopener">fine</a> and '
        '<a rel="noopener">sneaky</a></p>')
    assert html["2025-04-04-form-and-iframe.md"] == "Text stays."
    assert html["2025-04-05-stylesheet-link.md"] == "Visible text."
    assert html["2025-04-06-liquid-tags.md"] == "<p>See the  docs.</p>"
    assert html["2025-04-08-title-with-line-breaks.md"] == "<p>An excerpt with <b>bold</b> &amp; an ampersand</p>"


def test_relative_links_in_excerpts_become_absolute_against_the_post():
    post = by_name(read("hostile-site").posts)["2025-04-07-relative-links.md"]
    assert post.link == "https://hostile.example.org/b/2025/04/07/relative-links/"
    assert post.excerpt_html == (
        '<p>Read <a href="https://hostile.example.org/archive/" rel="noopener">the archive</a> and '
        '<a href="https://hostile.example.org/b/2025/04/07/relative-links/next/" rel="noopener">the next part</a> '
        'and <img src="https://hostile.example.org/b/2025/04/07/chart.png" alt="a chart" title="Chart">.</p>')
    assert post.excerpt == "Read the archive and the next part and ."


def test_plain_text_excerpt_keeps_blocks_and_list_items():
    post = by_name(read("hostile-site").posts)["2025-04-12-markdown-table-and-code.md"]
    assert post.excerpt == "a  b\n1  2\n\ncode <here>"


def test_excerpt_separator_from_the_post_and_link_definitions_from_the_rest():
    posts = by_name(read("jekyll/site").posts)
    assert posts["2025-08-07-excerpt-separator.md"].excerpt == (
        "This first paragraph\n\nand this second one are both in the excerpt.")
    linked = posts["2025-08-25-link-reference-in-excerpt.md"]
    assert linked.excerpt_html == (
        '<p>The excerpt links to <a href="https://example.net/docs" rel="noopener">the docs</a>.</p>')


def test_front_matter_defaults_from_the_jekyll_config_apply_beneath_the_post(tmp_path):
    (tmp_path / "_posts").mkdir()
    (tmp_path / "_config.yml").write_text(
        "timezone: UTC\ndefaults:\n  - scope: {path: '', type: posts}\n    values: {author: House Style, "
        "categories: [Default]}\n  - scope: {type: pages}\n    values: {author: Nobody}\n")
    (tmp_path / "_posts" / "2025-01-02-a.md").write_text("---\ntitle: A\n---\nText\n")
    (tmp_path / "_posts" / "2025-01-03-b.md").write_text("---\ntitle: B\nauthor: Own Name\n---\nText\n")
    config = site_config(tmp_path)
    posts = by_name(read_posts(config.site, NOW).posts)
    assert (posts["2025-01-02-a.md"].author, posts["2025-01-02-a.md"].categories) == ("House Style", ("Default",))
    assert posts["2025-01-03-b.md"].author == "Own Name"


def test_unreadable_post_is_reported(tmp_path):
    (tmp_path / "_posts").mkdir()
    (tmp_path / "_config.yml").write_text("timezone: UTC\n")
    target = tmp_path / "_posts" / "2025-01-01-gone.md"
    target.symlink_to(tmp_path / "missing.md")
    (tmp_path / "_posts" / "2025-01-02-ok.md").write_text("---\ntitle: OK\n---\n")
    result = read_posts(site_config(tmp_path).site, NOW)
    assert [p.title for p in result.posts] == ["OK"]
    assert [p.message for p in result.problems] == ["cannot be read: No such file or directory"]


def jekyll_site(root, config: str, posts: dict[str, str]):
    (root / "_config.yml").write_text("timezone: UTC\n" + config)
    for relative, text in posts.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return read_posts(site_config(root).site, NOW)


def test_a_longer_default_scope_wins_whatever_the_order(tmp_path):
    result = jekyll_site(tmp_path, (
        "defaults:\n"
        "  - {scope: {path: ''}, values: {permalink: '/blog/:title/'}}\n"
        "  - {scope: {path: tech}, values: {permalink: '/tech-notes/:title/'}}\n"
        "  - {scope: {path: ''}, values: {permalink: '/late/:title/'}}\n"), {
        "tech/_posts/2025-01-02-x.md": "---\ntitle: X\n---\n",
        "_posts/2025-01-03-y.md": "---\ntitle: Y\n---\n",
    })
    assert {p.path: p.url for p in result.posts} == {"tech/_posts/2025-01-02-x.md": "/tech-notes/x/",
                                                     "_posts/2025-01-03-y.md": "/late/y/"}


def test_defaults_merge_deeply_a_null_keeps_the_default_and_categories_add_up(tmp_path):
    result = jekyll_site(tmp_path, (
        "defaults:\n"
        "  - scope: {path: '', type: posts}\n"
        "    values: {author: House, image: {path: /a.png, alt: Default alt}, categories: [Default]}\n"), {
        "_posts/2025-01-02-a.md": "---\ntitle: A\nauthor: ~\nimage: {path: /b.png}\ncategories: [Own]\n---\n",
    })
    (post,) = result.posts
    assert (post.author, post.image_alt, post.image_path, post.categories) == (
        "House", "Default alt", "b.png", ("Default", "Own"))


def test_quoted_dates_in_the_forms_jekyll_reads(tmp_path):
    from zoneinfo import ZoneInfo

    from newsletter.clock import parse_moment

    zone = ZoneInfo("America/New_York")
    read = {text: parse_moment(text, zone).isoformat() for text in (
        "2025-07-22 9:30 +0100", "2025-7-2 9:30", "2025-07-22T9:30+01", "2025-07-22 09:30:00.5 -0500",
        "2025-07-22 9:30 UTC", "2025-07-22 9:30:05 +01:30")}
    assert read == {
        "2025-07-22 9:30 +0100": "2025-07-22T04:30:00-04:00",
        "2025-7-2 9:30": "2025-07-02T09:30:00-04:00",
        "2025-07-22T9:30+01": "2025-07-22T04:30:00-04:00",
        "2025-07-22 09:30:00.5 -0500": "2025-07-22T10:30:00.500000-04:00",
        "2025-07-22 9:30 UTC": "2025-07-22T05:30:00-04:00",
        "2025-07-22 9:30:05 +01:30": "2025-07-22T04:00:05-04:00",
    }
    result = jekyll_site(tmp_path, "", {"_posts/2025-07-22-a.md": '---\ndate: "2025-07-22 9:30 +0100"\n---\n'})
    assert [p.date.isoformat() for p in result.posts] == ["2025-07-22T08:30:00+00:00"]
