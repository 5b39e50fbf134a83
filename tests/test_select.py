"""The selector's rules, one test each, on Post values made in the test."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from newsletter.posts import Post
from newsletter.select import group_sections, select_posts

UNTIL = datetime(2026, 1, 5, 7, 0, tzinfo=timezone.utc)
SINCE = UNTIL - timedelta(days=7)


def post(name: str, *categories: str, days_ago: float = 1.0) -> Post:
    return Post(
        path=f"_posts/{name}.md", date=UNTIL - timedelta(days=days_ago), title=name.title(), slug=name,
        categories=tuple(categories), tags=(), author=None, base_url="https://x.org",
        image=None, image_alt=None, image_path=None, excerpt_source=name,
    )


def names(selection) -> list[str]:
    return [p.slug for p in selection.posts]


def select(posts, **options):
    return select_posts(posts, since=SINCE, until=UNTIL, **options)


def test_any_configured_category_matches_case_insensitively():
    posts = [post("a", "technology"), post("b", "Science", days_ago=2), post("c", "Culture")]
    assert names(select(posts, categories=["Technology", "SCIENCE"])) == ["a", "b"]


def test_no_configured_categories_means_every_post():
    posts = [post("a", "Tech", days_ago=1), post("b", days_ago=2)]
    assert names(select(posts)) == ["a", "b"]


def test_excluded_categories_win_over_included_ones():
    posts = [post("a", "Tech", "Sponsored"), post("b", "Tech")]
    assert names(select(posts, categories=["Tech"], exclude_categories=["sponsored"])) == ["b"]


def test_the_window_is_open_at_since_and_closed_at_until():
    posts = [post("at-until", "T", days_ago=0), post("at-since", "T", days_ago=7), post("inside", "T", days_ago=6.9),
             post("future", "T", days_ago=-0.01)]
    assert names(select(posts)) == ["at-until", "inside"]


def test_newest_first_then_capped():
    posts = [post("old", "T", days_ago=5), post("new", "T", days_ago=1), post("mid", "T", days_ago=3)]
    assert names(select(posts)) == ["new", "mid", "old"]
    assert names(select(posts, max_posts=2)) == ["new", "mid"]


def test_posts_already_carried_are_left_out():
    posts = [post("a", "T"), post("b", "T", days_ago=2)]
    assert names(select(posts, exclude_keys=["_posts/a.md#a"])) == ["b"]


def test_a_post_in_two_selected_categories_appears_once_under_the_first_configured():
    posts = [post("both", "Science", "Tech"), post("sci", "Science", days_ago=2)]
    selection = select(posts, categories=["Tech", "Science"])
    assert names(selection) == ["both", "sci"]
    assert [(s.category, [p.slug for p in s.posts]) for s in selection.sections] == [
        ("Tech", ["both"]), ("Science", ["sci"])]


def test_sections_follow_the_configured_order_and_skip_empty_ones():
    posts = [post("c", "Culture"), post("t", "Tech", days_ago=2)]
    sections = select(posts, categories=["Science", "Tech", "Culture"]).sections
    assert [s.category for s in sections] == ["Tech", "Culture"]


def test_without_configured_categories_sections_are_alphabetical_and_uncategorised_last():
    posts = [post("z", "Zoology"), post("none"), post("multi", "travel", "Art", days_ago=2), post("b", "beta", days_ago=3)]
    sections = select(posts).sections
    assert [(s.category, [p.slug for p in s.posts]) for s in sections] == [
        ("Art", ["multi"]), ("beta", ["b"]), ("Zoology", ["z"]), ("Other", ["none"])]


def test_section_headings_keep_the_authors_case_of_the_newest_post():
    posts = [post("new", "machine learning", days_ago=1), post("old", "Machine Learning", days_ago=2)]
    sections = group_sections(posts, ["MACHINE LEARNING"])
    assert [(s.category, len(s.posts)) for s in sections] == [("machine learning", 2)]


def test_ties_on_date_are_broken_by_path_like_jekyll():
    posts = [post("a", "T", days_ago=1), post("b", "T", days_ago=1)]
    assert names(select(posts)) == ["b", "a"]


def test_an_empty_selection_is_empty():
    selection = select([post("old", "T", days_ago=30)])
    assert selection.is_empty and selection.sections == ()
