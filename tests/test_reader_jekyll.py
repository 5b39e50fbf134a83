"""The reader against real Jekyll 4.3: tests/fixtures/jekyll/expected holds Jekyll's own view of the fixture
site (one post per edge case), for eight permalink styles; regenerate.sh beside it rebuilds it with Jekyll."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from newsletter.site import read_posts

from .conftest import FIXTURES, site_config

JEKYLL = FIXTURES / "jekyll"
STYLES = dict(line.split("\t") for line in (JEKYLL / "expected" / "styles.tsv").read_text().splitlines())
NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)

# Where the reader deliberately differs from Jekyll, and why:
# - numbers in categories and tags become strings (Jekyll 4.3 lists both 2025 and "2025");
# - with CRLF line endings the default excerpt still ends at the first blank line (Jekyll looks for "\n\n" in
#   the raw text, finds none, and takes the whole post).
DELIBERATE = {
    ("_posts/2025-08-01-number-categories.md", "categories"): ["2025", "1.5"],
    ("_posts/2025-08-01-number-categories.md", "tags"): ["42", "release"],
    ("_posts/2025-07-23-bom-and-crlf.md", "excerpt"): "First paragraph with Windows line endings.",
}


def ours(style: str) -> list[dict]:
    config = site_config(JEKYLL / "site", permalink=STYLES[style])
    result = read_posts(config.site, NOW)
    assert result.problems == []
    return [
        {
            "path": post.path,
            "date": post.date.isoformat(),
            "title": post.title,
            "slug": post.slug,
            "categories": list(post.categories),
            "tags": list(post.tags),
            "url": post.url,
            "excerpt": post.excerpt,
            "author": post.author,
            "desk": post.data.get("desk"),
        }
        for post in result.posts
    ]


@pytest.mark.parametrize("style", sorted(STYLES))
def test_reader_matches_jekyll(style):
    expected = json.loads((JEKYLL / "expected" / f"{style}.json").read_text(encoding="utf-8"))
    for entry in expected:
        for (path, key), value in DELIBERATE.items():
            if entry["path"] == path:
                entry[key] = value
    got = ours(style)
    assert [p["path"] for p in got] == [e["path"] for e in expected]
    for mine, theirs in zip(got, expected):
        assert mine == theirs, mine["path"]


def test_fixture_site_covers_the_permalink_styles_and_edge_cases():
    expected = json.loads((JEKYLL / "expected" / "date.json").read_text(encoding="utf-8"))
    assert len(expected) == 34
    assert set(STYLES) == {"date", "pretty", "ordinal", "none", "weekdate", "custom-slug", "custom-names",
                           "custom-slugified"}
    urls = {e["path"]: e["url"] for e in expected}
    assert urls["_posts/2025-08-20-space in name.md"] == "/2025/08/20/space-in-name.html"
    assert urls["_posts/2025-07-31-category-singular.md"] == "/science%20fiction/2025/07/31/category-singular.html"
    # front-matter defaults: a permalink and categories for the folder `tech`, ".." taken out of a permalink
    assert urls["tech/_posts/2025-08-12-folder-category.md"] == "/tech-notes/tech/notes/extra/folder-category/"
    assert urls["_posts/sub/2025-08-11-inside-a-subfolder.md"] == "/deep/inside-a-subfolder/"
    # a naive, unquoted YAML timestamp is UTC to Jekyll: 23:45 on the 29th is 19:45 in New York
    dates = {e["path"]: e["date"] for e in expected}
    assert dates["_posts/2025-07-29-naive-datetime-late.md"] == "2025-07-29T19:45:00-04:00"
    assert dates["_posts/2025-07-26-date-with-offset.md"] == "2025-07-26T20:00:00-04:00"
    # a quoted date with a one-digit hour and a spaced offset, as Ruby's Time.parse reads it
    assert dates["_posts/2025-7-6-single-digit-date.md"] == "2025-07-06T04:30:00-04:00"


def test_overlapping_defaults_merge_in_jekylls_order():
    """The fixture's _config.yml lists ten sets of defaults; these are the posts where their order shows."""
    expected = {e["path"]: e for e in json.loads((JEKYLL / "expected" / "date.json").read_text(encoding="utf-8"))}
    mine = {p["path"]: p for p in ours("date")}
    august = "_posts/2025-08-14-title-with-markup.md"
    # the typed scope for "_posts/2025-08-1", listed first, wins; of the two "" scopes listed after it, both
    # lose, so the earlier (untyped) one's region stays over the later (typed) one's
    assert expected[august]["author"] == mine[august]["author"] == "August Desk"
    assert expected[august]["desk"] == mine[august]["desk"] == {"name": "august", "shift": "late",
                                                               "region": "north", "room": 1}
    # elsewhere the typed "" scope, listed after the untyped one, wins over it; the post's own author wins
    typical = "_posts/2025-07-22-typical-news-post.md"
    assert expected[typical]["desk"] == mine[typical]["desk"] == {"name": "general", "region": "south", "room": 1}
    assert expected[typical]["author"] == mine[typical]["author"] == "Ada Lovelace"
    # a glob scope, longer than the others, wins for the files it finds
    globbed = "_posts/2025-08-07-excerpt-separator.md"
    assert expected[globbed]["desk"] == mine[globbed]["desk"] == {"name": "globbed", "region": "south", "room": 1}
    # categories from the folder, the defaults and the post are all kept; "/tech" (a leading slash) and a
    # scope for pages do not apply to posts in tech/
    tech = "tech/_posts/2025-08-12-folder-category.md"
    assert expected[tech]["categories"] == mine[tech]["categories"] == ["tech", "Notes", "Tech", "Extra"]
    assert expected[tech]["author"] == mine[tech]["author"] == "Posts Desk"
