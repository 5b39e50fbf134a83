"""The post cache: a read through it gives exactly what a cold read of the same files gives, notices every
change to the files and to what shapes a post, and survives a damaged or foreign cache file.

Every copied site gets fixed modification times (2020), so no test depends on today's clock, and the post
cache's guard against files changed just before a read never applies unless a test asks for it."""

from __future__ import annotations

import dataclasses
import hashlib
import marshal
import os
import pickle
import shutil
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from newsletter import postcache
from newsletter.postcache import MAGIC, Outcome, PostCache, cache_file, fingerprint
from newsletter.posts import PostError, PostWarning
from newsletter.site import find_post_files, read_posts

from .conftest import FIXED_NOW, FIXTURES, site_config

JEKYLL_NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)
OLD_NS = 1_577_880_000_000_000_000  # 2020-01-01T12:00:00Z: long before any read
CACHED_SITES = ["jekyll/site", "broken-site", "hostile-site", "hostile-posts", "wide-post-site", "marker-site",
                "plain-folder"]


def age(root: Path, mtime_ns: int = OLD_NS) -> None:
    """Give every file under `root` the same old modification time."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            os.utime(path, ns=(mtime_ns, mtime_ns))


def copy_site(name: str, tmp_path: Path) -> Path:
    site = tmp_path / "site"
    shutil.copytree(FIXTURES / name, site, symlinks=True)
    age(site)
    return site


def read(site: Path, now: datetime = JEKYLL_NOW, **overrides):
    return read_posts(site_config(site, **overrides).site, now)


def described(result) -> list:
    """Everything about the posts read, types included, and the problems."""
    posts = []
    for post in result.posts:
        values = post.url_values
        posts.append((
            post, repr(post.data), [type(v).__name__ for v in post.data.values()], post.url, post.url_template,
            post.excerpt, post.excerpt_html, repr(post.date.tzinfo), post.title, post.excerpt_source,
            (values.date, values.slug, values.basename, values.categories, values.output_ext, values.path),
        ))
    return [posts, [str(problem) for problem in result.problems]]


def write_post(site: Path, name: str, text: str, mtime_ns: int = OLD_NS) -> Path:
    path = site / "_posts" / name
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.mark.parametrize("name", CACHED_SITES)
def test_a_cached_read_gives_exactly_the_posts_and_problems_of_a_cold_read(name, tmp_path):
    site = copy_site(name, tmp_path)
    uncached = read(site, cache=None)
    first = read(site)
    second = read(site)
    assert described(first) == described(uncached)
    assert described(second) == described(uncached)
    assert first.parsed == uncached.parsed > 0
    assert second.parsed == 0


def test_the_fixture_site_through_the_cache_keeps_defaults_excerpts_dates_and_categories(tmp_path):
    site = copy_site("jekyll/site", tmp_path)
    read(site)
    posts = {post.path: post for post in read(site).posts}
    tech = posts["tech/_posts/2025-08-12-folder-category.md"]
    assert tech.categories == ("tech", "Notes", "Tech", "Extra")
    assert tech.url == "/tech-notes/tech/notes/extra/folder-category/"
    assert tech.author == "Posts Desk"
    late = posts["_posts/2025-07-29-naive-datetime-late.md"]
    assert late.date.isoformat() == "2025-07-29T19:45:00-04:00"
    assert late.date.tzinfo is site_config(site).site.timezone
    assert late.data["date"] == datetime(2025, 7, 29, 23, 45)
    assert posts["_posts/2025-08-14-title-with-markup.md"].data["desk"] == {
        "name": "august", "shift": "late", "region": "north", "room": 1}
    assert posts["_posts/2025-08-07-excerpt-separator.md"].excerpt_source == (
        "This first paragraph\n\nand this second one are both in the excerpt.\n")


def test_bad_posts_are_reported_on_every_read(tmp_path):
    site = copy_site("broken-site", tmp_path)
    cold = [str(p) for p in read(site, FIXED_NOW).problems]
    again = read(site, FIXED_NOW)
    assert again.parsed == 0
    assert [str(p) for p in again.problems] == cold
    assert len(cold) == 6
    assert any("2025-03-02-invalid-yaml.md" in p and "invalid YAML front matter" in p for p in cold)


def test_an_edit_of_the_same_size_with_a_new_mtime_is_read_again(tmp_path):
    site = copy_site("broken-site", tmp_path)
    path = write_post(site, "2025-03-07-edited.md", "---\ntitle: Before\n---\nBody.\n")
    assert {p.title for p in read(site, FIXED_NOW).posts} >= {"Before"}
    write_post(site, "2025-03-07-edited.md", "---\ntitle: Behind\n---\nBody.\n", OLD_NS + 1_000)
    assert path.stat().st_size == len("---\ntitle: Before\n---\nBody.\n")
    again = read(site, FIXED_NOW)
    assert again.parsed == 1
    assert "Behind" in {p.title for p in again.posts}
    assert "Before" not in {p.title for p in again.posts}


def test_an_edit_with_the_same_size_and_mtime_is_still_seen(tmp_path):
    """The change time (which a program cannot set back) and the inode are in the key too."""
    site = copy_site("broken-site", tmp_path)
    path = write_post(site, "2025-03-07-edited.md", "---\ntitle: Before\n---\nBody.\n")
    read(site, FIXED_NOW)
    replacement = path.with_name("replacement.tmp")
    replacement.write_text("---\ntitle: Behind\n---\nBody.\n", encoding="utf-8")
    os.utime(replacement, ns=(OLD_NS, OLD_NS))
    os.replace(replacement, path)
    again = read(site, FIXED_NOW)
    assert again.parsed == 1
    assert "Behind" in {p.title for p in again.posts}


def test_an_added_a_renamed_and_a_deleted_post_are_seen(tmp_path):
    site = copy_site("jekyll/site", tmp_path)
    before = {p.path for p in read(site).posts}
    write_post(site, "2025-09-01-added.md", "---\ntitle: Added\n---\nNew.\n")
    added = read(site)
    assert added.parsed == 1
    assert {p.path for p in added.posts} == before | {"_posts/2025-09-01-added.md"}
    posts = site / "_posts"
    (posts / "2025-09-01-added.md").rename(posts / "2025-09-02-renamed.md")
    renamed = read(site)
    assert renamed.parsed == 1
    assert {p.path for p in renamed.posts} == before | {"_posts/2025-09-02-renamed.md"}
    assert [p.date.day for p in renamed.posts if p.title == "Added"] == [2]
    (posts / "2025-09-02-renamed.md").unlink()
    deleted = read(site)
    assert deleted.parsed == 0
    assert {p.path for p in deleted.posts} == before
    # the cache keeps entries only for files that still exist
    config = site_config(site).site
    kept = postcache._load(cache_file(config), fingerprint(config))
    assert sorted(kept) == sorted(relative for _, relative, _ in find_post_files(config, []))
    assert "_posts/2025-09-02-renamed.md" not in kept
    assert len(kept) == 36


def test_a_changed_config_yml_invalidates_the_cache(tmp_path):
    site = copy_site("jekyll/site", tmp_path)
    first = read(site)
    config = site / "_config.yml"
    config.write_text(config.read_text().replace("values: {author: Posts Desk,", "values: {author: Night Desk,"))
    again = read(site)
    assert again.parsed == first.parsed
    assert {p.path: p.author for p in again.posts}["tech/_posts/2025-08-12-folder-category.md"] == "Night Desk"
    with config.open("a") as out:
        out.write("# a comment changes nothing the reader uses, yet the file is hashed as written\n")
    assert read(site).parsed == first.parsed
    assert read(site).parsed == 0


def test_a_changed_site_setting_invalidates_the_cache(tmp_path):
    site = copy_site("jekyll/site", tmp_path)
    first = read(site)
    again = read(site, permalink="/:title/")
    assert again.parsed == first.parsed
    assert {p.path: p.url for p in again.posts}["_posts/2025-07-22-typical-news-post.md"] == \
        "/typical-news-post/"


def test_a_cache_written_by_another_reader_version_is_ignored(tmp_path, monkeypatch):
    site = copy_site("jekyll/site", tmp_path)
    first = read(site)
    monkeypatch.setattr(postcache, "READER_VERSION", postcache.READER_VERSION + 1)
    assert read(site).parsed == first.parsed
    assert read(site).parsed == 0


def rewrite(path: Path, body: bytes, digest: bool = True) -> None:
    head = hashlib.blake2b(body, digest_size=32).digest() if digest else b"\0" * 32
    path.write_bytes(MAGIC + head + body)


class _Trap:
    """Unpickling this would create a file: the proof that nothing in the cache file is ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def damaged_caches(path: Path, config, marker: Path) -> dict:
    good = path.read_bytes()
    entries = marshal.loads(good[len(MAGIC) + 32:])[2]
    flipped = bytearray(good)
    flipped[good.index(b"Typical news post")] ^= 0x20
    return {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "one byte changed": bytes(flipped),
        "random bytes": bytes(range(256)) * 8,
        "a pickle": pickle.dumps(_Trap(marker)),
        "a pickle behind the magic": MAGIC + b"\0" * 32 + pickle.dumps(_Trap(marker)),
        "json": b'{"posts": []}',
        "another format": ("digest", marshal.dumps((99, fingerprint(config), entries))),
        "not a tuple": ("digest", marshal.dumps([1, 2, 3])),
        "entries of the wrong shape": ("digest", marshal.dumps((postcache.FORMAT, fingerprint(config), {
            key: (entry[0], entry[1], ("post", "nonsense")) for key, entry in entries.items()}))),
        "entries with wrong types": ("digest", marshal.dumps((postcache.FORMAT, fingerprint(config), {
            key: (entry[0], entry[1], tuple(7 for _ in entry[2])) for key, entry in entries.items()}))),
        "a code object": ("digest", marshal.dumps((postcache.FORMAT, fingerprint(config), {
            key: (entry[0], entry[1], ("post", compile("open('x', 'w')", "x", "exec")))
            for key, entry in entries.items()}))),
        "a zone outside the zone database": ("digest", marshal.dumps((postcache.FORMAT, fingerprint(config), {
            key: (entry[0], entry[1], entry[2][:2] + (("datetime", 2025, 1, 1, 0, 0, 0, 0, 0, "../../etc/passwd"),)
                  + entry[2][3:]) for key, entry in entries.items()}))),
    }


@pytest.mark.parametrize("damage", ["empty", "truncated", "one byte changed", "random bytes", "a pickle",
                                    "a pickle behind the magic", "json", "another format", "not a tuple",
                                    "entries of the wrong shape", "entries with wrong types", "a code object",
                                    "a zone outside the zone database"])
def test_a_damaged_or_foreign_cache_file_is_ignored_and_rebuilt(damage, tmp_path):
    site = copy_site("jekyll/site", tmp_path)
    expected = described(read(site, cache=None))
    config = site_config(site).site
    read(site)
    path = cache_file(config)
    marker = tmp_path / "unpickled"
    content = damaged_caches(path, config, marker)[damage]
    if isinstance(content, tuple):
        rewrite(path, content[1])
    else:
        path.write_bytes(content)
    result = read(site)
    assert described(result) == expected
    assert result.parsed == 36  # every post file
    assert not marker.exists()
    assert not (Path.cwd() / "x").exists()
    assert read(site).parsed == 0  # rebuilt


def test_writes_leave_no_temporary_file_and_replace_the_cache_whole(tmp_path):
    site = copy_site("jekyll/site", tmp_path)
    read(site)
    path = cache_file(site_config(site).site)
    first = path.stat().st_ino
    write_post(site, "2025-09-01-added.md", "---\ntitle: Added\n---\nNew.\n")
    read(site)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert path.stat().st_ino != first  # a new file renamed over the old one, not rewritten in place


def test_an_unchanged_site_does_not_rewrite_the_cache(tmp_path):
    site = copy_site("jekyll/site", tmp_path)
    read(site)
    path = cache_file(site_config(site).site)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    read(site)
    assert path.stat().st_mtime_ns == OLD_NS


def test_a_cache_folder_that_cannot_be_written_is_a_warning_and_the_posts_are_read(tmp_path):
    site = copy_site("broken-site", tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = read(site, FIXED_NOW, cache=blocker / "cache")
    assert [p.title for p in result.posts] == ["The one valid post"]
    assert "the post cache cannot be written" in str(result.problems[-1])
    assert len(result.problems) == 7


def test_the_cache_turned_off_writes_nothing(tmp_path):
    site = copy_site("jekyll/site", tmp_path)
    config = site_config(site, cache=None).site
    assert cache_file(config) is None
    assert read(site, cache=None).parsed == read(site, cache=None).parsed > 0
    assert not Path(os.environ["NEWSLETTER_CACHE_DIR"]).exists()


def test_a_file_changed_just_before_the_read_is_not_kept(tmp_path):
    """Within the guard a second edit in the same tick of the file system's clock could keep the stamp."""
    started = OLD_NS + 10 * postcache.RACY_NS
    cache = PostCache(tmp_path / "posts.cache", b"f" * 32, started_ns=started)
    outcome = Outcome(None, (PostWarning("a warning", 3),))
    cache.put("_posts/recent.md", (10, started - 1, started - 1, 1), (), outcome)
    cache.put("_posts/old.md", (10, OLD_NS, OLD_NS, 2), (), outcome)
    cache.save()
    again = PostCache(tmp_path / "posts.cache", b"f" * 32, started_ns=started)
    assert again.get("_posts/recent.md", (10, started - 1, started - 1, 1), (), "") is None
    again.put("_posts/recent.md", (10, started - 1, started - 1, 1), (), outcome)  # read from disk again
    kept = again.get("_posts/old.md", (10, OLD_NS, OLD_NS, 2), (), "")
    assert kept.post is None
    assert [(str(w), w.line) for w in kept.warnings] == [("a warning", 3)]
    os.utime(tmp_path / "posts.cache", ns=(OLD_NS, OLD_NS))
    again.save()
    assert (tmp_path / "posts.cache").stat().st_mtime_ns == OLD_NS  # nothing changed, nothing written


def test_errors_and_warnings_come_back_with_their_lines(tmp_path):
    cache = PostCache(tmp_path / "posts.cache", b"f" * 32, started_ns=OLD_NS * 2)
    stamp = (10, OLD_NS, OLD_NS, 1)
    cache.put("_posts/bad.md", stamp, (0, 2), Outcome(None, (), PostError("invalid YAML front matter: x", 4)))
    cache.save()
    again = PostCache(tmp_path / "posts.cache", b"f" * 32)
    assert again.get("_posts/bad.md", stamp, (0, 1), "") is None  # other defaults apply now
    kept = again.get("_posts/bad.md", stamp, (0, 2), "")
    assert (str(kept.error), kept.error.line, kept.post) == ("invalid YAML front matter: x", 4, None)


def test_the_cli_reads_without_the_cache_when_told(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from newsletter.cli import cli

    site = copy_site("jekyll/site", tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["--now", "2026-11-27", "posts", "--source", str(site), "--since", "2025-01-01", "--json"]
    off = runner.invoke(cli, ["--no-cache", *args])
    assert off.exit_code == 0, off.output
    assert off.output.count('"path"') == 34
    assert not Path(os.environ["NEWSLETTER_CACHE_DIR"]).exists()
    on = runner.invoke(cli, args)
    assert on.exit_code == 0
    assert on.output == off.output
    assert cache_file(site_config(site).site).is_file()


def test_the_settings_fingerprint_covers_the_defaults(tmp_path):
    site = copy_site("jekyll/site", tmp_path)
    config = site_config(site).site
    changed = dataclasses.replace(config, defaults=config.defaults[1:])
    assert fingerprint(config) == fingerprint(site_config(site).site)
    assert fingerprint(changed) != fingerprint(config)


def test_a_post_the_cache_cannot_hold_is_read_from_its_file_every_time(tmp_path):
    """A hexadecimal number too long for Python to print in decimal (YAML reads it; JSON cannot write it), a
    set and a date as a key: the post reads the same, from the cache or from its file."""
    site = copy_site("broken-site", tmp_path)
    write_post(site, "2025-03-08-huge-number.md", "---\ntitle: Huge\nn: 0x" + "f" * 4000 + "\n---\nBody.\n")
    write_post(site, "2025-03-09-set-and-date-key.md",
               "---\ntitle: Odd\ns: !!set {a, b}\nwhen: {2025-03-09: launch}\n---\nBody.\n")
    uncached = read(site, FIXED_NOW, cache=None)
    first, second = read(site, FIXED_NOW), read(site, FIXED_NOW)
    for result in (first, second):  # (repr cannot print the number: compared as values)
        assert result.posts == uncached.posts
        assert [p.data for p in result.posts] == [p.data for p in uncached.posts]
        assert [str(p) for p in result.problems] == [str(p) for p in uncached.problems]
    assert second.parsed == 1  # the huge number only
    posts = {p.title: p for p in second.posts}
    assert posts["Huge"].data["n"] == 16 ** 4000 - 1
    assert posts["Odd"].data == {"title": "Odd", "s": {"a", "b"}, "when": {date(2025, 3, 9): "launch"}}


def rewrite_entries(path: Path, config, change) -> int:
    """Write the cache again with each post entry changed by `change`, with a digest that matches: what a
    cache file written by something other than this reader could hold."""
    entries = marshal.loads(path.read_bytes()[len(MAGIC) + 32:])[2]
    changed = {key: (entry[0], entry[1], change(entry[2]) if entry[2][0] == "post" else entry[2])
               for key, entry in entries.items()}
    rewrite(path, marshal.dumps((postcache.FORMAT, fingerprint(config), changed)))
    return sum(entry[2][0] == "post" for entry in entries.values())


def with_field(index: int, value):
    return lambda packed: packed[:index] + (value,) + packed[index + 1:]


@pytest.mark.parametrize("index, value", [
    (5, ("tech", 7)), (6, ["a list", "not a tuple"]), (7, 42), (12, "yes"), (13, "json"), (13, ()),
    (13, ("yaml", "title: x")), (1, [("a warning", 3)]), (1, 0), (16, None),
])
def test_a_cache_entry_with_a_field_of_the_wrong_type_is_read_again_from_its_file(index, value, tmp_path):
    site = copy_site("jekyll/site", tmp_path)
    expected = described(read(site, cache=None))
    config = site_config(site).site
    read(site)
    posts = rewrite_entries(cache_file(config), config, with_field(index, value))
    result = read(site)
    assert described(result) == expected
    assert result.parsed == posts > 30


@pytest.mark.parametrize("data", [
    ("json", "{not json", ()), ("json", "[1, 2]", ()), ("json", '{"title": "x"}', (("date", ("nonsense",)),)),
    ("json", '{"title": "x"}', (("date", ("date", 2025, 1, 1)),)), ("json", '{"title": "x"}', 7),
    ("json", '{"title": "x"}'), ("tagged", [1, 2]), ("tagged", ("set", [1]), "extra"),
])
def test_a_damaged_front_matter_in_the_cache_stops_the_command_and_never_gives_wrong_data(data, tmp_path):
    """A cached post's front matter is unpacked when first asked for, after the read: an entry that passed the
    file's digest but does not unpack is an error naming the post and the cache file, not a post without it."""
    site = copy_site("jekyll/site", tmp_path)
    config = site_config(site).site
    read(site)
    rewrite_entries(cache_file(config), config, with_field(13, data))
    result = read(site)
    assert result.parsed == 0
    post = result.posts[0]
    assert post.date == read(site, cache=None).posts[0].date  # the rest of the post is as written
    with pytest.raises(postcache.DamagedEntry, match=f"^{post.path}: the post cache holds a damaged front matter") \
            as caught:
        post.data  # noqa: B018
    assert str(cache_file(config).name) in str(caught.value)
    assert "data" not in post.__dict__


def test_a_cached_post_unpacks_its_front_matter_and_url_values_only_when_asked(tmp_path):
    site = copy_site("jekyll/site", tmp_path)
    uncached = {post.path: post for post in read(site, cache=None).posts}
    read(site)
    for post in read(site).posts:
        assert "data" not in post.__dict__ and "url_values" not in post.__dict__
        assert post.url == uncached[post.path].url
        assert post.data == uncached[post.path].data
        assert "data" in post.__dict__ and "url_values" in post.__dict__
