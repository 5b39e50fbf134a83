"""Posts written to break the reader: impossible values, YAML that never ends or explodes, dangerous images,
lists where text belongs, symbolic links out of the site. Each is skipped or corrected with a warning naming
the file and line, and never costs the valid posts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from newsletter import permalink
from newsletter.cli import cli
from newsletter.site import read_posts

from .conftest import FIXTURES, ROOT, site_config

HOSTILE = FIXTURES / "hostile-posts"
NOW = datetime(2026, 1, 5, tzinfo=timezone.utc)
SKIPPED = {
    ("2026-01-03-impossible-day.md", 3): "invalid date '2025-02-30' in front matter: day is out of range for month",
    ("2026-01-03-hour-25.md", 4): "invalid date '2026-01-03 25:00:00' in front matter: hour must be in 0..23",
    ("2026-01-03-offset-past-a-day.md", 3):
        "invalid date '2026-01-03 09:00:00 +25:00' in front matter: the offset from UTC must be less than 24 hours",
    ("2026-01-03-date-past-the-end-of-time.md", 3):
        "invalid date 9999-12-31 23:00:00-05:00 in front matter: date value out of range",
    ("2026-01-03-alias-containing-itself.md", 3):
        "invalid YAML front matter: an alias refers to a value that contains it, so the value never ends",
    ("2026-01-03-billion-laughs.md", 7):
        "invalid YAML front matter: aliases expand it to more than 10,000 values; write the values out",
}


def read(source=HOSTILE):
    return read_posts(site_config(source).site, NOW)


def reported(result) -> dict[tuple[str, int | None], list[str]]:
    found: dict[tuple[str, int | None], list[str]] = {}
    for problem in result.problems:
        found.setdefault((problem.where.rsplit("/", 1)[-1], problem.line), []).append(problem.message)
    return found


def by_name(result):
    return {post.path.rsplit("/", 1)[-1]: post for post in result.posts}


def test_posts_that_cannot_be_built_are_skipped_with_file_line_and_reason():
    result = read()
    found = reported(result)
    assert {key: found.get(key) for key in SKIPPED} == {key: [message] for key, message in SKIPPED.items()}
    assert not set(by_name(result)) & {name for name, _ in SKIPPED}
    assert by_name(result)["2026-01-04-valid.md"].categories == ("Science",)
    assert len(result.posts) == 9


def test_a_billion_laughs_is_refused_in_bounded_memory():
    # In a child process limited to 1 GB, so that a reader without the bound fails instead of filling the machine.
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from datetime import datetime, timezone\n"
        "from tests.conftest import FIXTURES, site_config\n"
        "from newsletter.site import read_posts\n"
        "site = site_config(FIXTURES / 'hostile-posts').site\n"
        "result = read_posts(site, datetime(2026, 1, 5, tzinfo=timezone.utc))\n"
        "print(len(result.posts))\n"
        "print([str(p).split('/')[-1] for p in result.problems if 'laughs' in p.where])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "9", "['2026-01-03-billion-laughs.md:7: invalid YAML front matter: aliases expand it to more than 10,000 "
             "values; write the values out']"]


def test_aliases_within_the_bound_still_work(tmp_path):
    (tmp_path / "_posts").mkdir()
    (tmp_path / "_config.yml").write_text("timezone: UTC\n")
    (tmp_path / "_posts" / "2025-01-01-a.md").write_text(
        "---\ntitle: '*Starred* & anchored'\nshared: &names [Ada, Grace]\ncategories: *names\ntags: *names\n---\n")
    (post,) = read(tmp_path).posts
    assert (post.title, post.categories, post.tags) == ("*Starred* & anchored", ("Ada", "Grace"), ("Ada", "Grace"))


def test_only_http_and_https_images_are_kept_and_other_schemes_are_named():
    result = read()
    posts, found = by_name(result), reported(result)
    never = "which is never sent (only http and https images are); the post has no image"
    for scheme in ("javascript", "data", "file"):
        assert posts[f"2026-01-02-image-{scheme}.md"].image is None
        assert found[(f"2026-01-02-image-{scheme}.md", 3)] == [f"image uses the {scheme}: scheme, {never}"]
    assert posts["2026-01-02-image-file.md"].image_alt is None
    assert posts["2026-01-02-image-without-host.md"].image is None
    assert found[("2026-01-02-image-without-host.md", 3)] == [
        "image 'http:/pic.png' has no host; the post has no image"]
    assert posts["2026-01-02-image-protocol-relative.md"].image == "https://cdn.example.net/a.png"


def test_a_dropped_image_never_reaches_the_preview_or_its_warnings(tmp_path, monkeypatch):
    shutil.copytree(HOSTILE, tmp_path / "site")
    (tmp_path / "newsletter.toml").write_text(
        f'[site]\nsource = "site"\n[render]\ntemplates = "{ROOT / "templates"}"\n'
        '[newsletters.n]\ntitle = "N"\nwindow = "7d"\nmax_posts = 20\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--now", "2026-01-05T07:00:00+00:00", "preview", "n", "--out", "-"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    assert "A javascript image" in result.stdout
    assert "javascript:" not in result.stdout and "data:image" not in result.stdout
    assert "file:" not in result.stdout.lower()
    assert "set [site] url" not in result.stderr


def test_lists_and_maps_where_text_belongs_are_warned_about_and_replaced():
    result = read()
    posts, found = by_name(result), reported(result)
    listed = posts["2026-01-01-list-title-and-map-fields.md"]
    assert (listed.title, listed.author, listed.image_alt, listed.excerpt) == (
        "List Title And Map Fields", None, None, "The first paragraph.")
    name = "2026-01-01-list-title-and-map-fields.md"
    assert {key: value for key, value in found.items() if key[0] == name} == {
        (name, 2): ["title is a list (['a', 'b']), not text; the title is made from the file name"],
        (name, 3): ["author has a list (['Ada', 'Grace']) where a name should be; it is left out"],
        (name, 4): ["excerpt is a mapping ({'text': 'hello'}), not text; the excerpt is taken from the post"],
        (name, 5): ["image_alt is a list (['x']), not text; the image has no alt text of its own"],
    }
    maps = posts["2026-01-01-maps-among-the-names.md"]
    assert (maps.categories, maps.tags, maps.author, maps.slug, maps.url) == (
        ("Science",), (), "Ada", "maps-among-the-names", "/science/2026/01/01/maps-among-the-names.html")
    name = "2026-01-01-maps-among-the-names.md"
    assert {key: value for key, value in found.items() if key[0] == name} == {
        (name, 3): ["categories lists a mapping ({'a': 1}), not a name; it is left out"],
        (name, 4): ["tags is a mapping ({'x': 'y'}), not a list of names; it is left out"],
        (name, 5): ["author has a list (['Grace']) where a name should be; it is left out"],
        (name, 6): ["slug is a list (['s']), not text; the file name's slug is used"],
        (name, 7): ["permalink is a mapping ({'p': 1}), not text; the site's permalink is used"],
    }
    assert all(key[0] != "2026-01-04-valid.md" for key in found)


def test_front_matter_with_date_keys_can_be_kept_with_an_issue():
    post = by_name(read())["2026-01-01-date-keys.md"]
    frozen = json.loads(json.dumps(post.freeze()))
    assert frozen["data"] == {"title": "Date keys", "2025-01-01": "new year", "nested": {"2025-01-02": "x"}}


def test_url_clean_up_takes_out_dot_dot_segments():
    values = permalink.UrlValues(date=NOW, slug="../../etc/passwd", basename="x", categories=["..", "a..b"],
                                 output_ext=".html", path="_posts/x.md")
    assert permalink.generate("/../:categories/../:title/", values) == "/a/b/-/-etc-passwd/"
    assert permalink.generate("/a/../../b/./c/:slug:output_ext", values) == "/a/b/c/etc-passwd.html"


# -- symbolic links --------------------------------------------------------------------------------------------


@pytest.fixture
def linked_site(tmp_path):
    """A site whose _posts holds a link to a file outside it, a link to a folder outside it, a link back to
    itself, two links to one folder inside the site, and a link to a post inside the site."""
    outside = tmp_path / "outside"
    (outside / "more").mkdir(parents=True)
    (outside / "2025-01-05-secret.md").write_text("---\ntitle: Outside\n---\n")
    (outside / "more" / "2025-01-06-elsewhere.md").write_text("---\ntitle: Elsewhere\n---\n")
    site = tmp_path / "site"
    posts = site / "_posts"
    (site / "shared").mkdir(parents=True)
    posts.mkdir()
    (site / "_config.yml").write_text("timezone: UTC\n")
    (site / "shared" / "2025-01-04-shared.md").write_text("---\ntitle: Shared\n---\n")
    (site / "2025-01-07-page.md").write_text("---\ntitle: Linked in\n---\n")
    (posts / "2025-01-01-a.md").write_text("---\ntitle: A\n---\n")
    (posts / "2025-01-02-hostname.md").symlink_to("/etc/hostname")
    (posts / "2025-01-03-secret.md").symlink_to(outside / "2025-01-05-secret.md")
    (posts / "2025-01-07-linked-in.md").symlink_to(site / "2025-01-07-page.md")
    (posts / "loop").symlink_to(".")
    (posts / "escape").symlink_to(outside / "more")
    (posts / "in-site").symlink_to(site / "shared")
    (posts / "in-site-again").symlink_to(site / "shared")
    return site


def test_links_out_of_the_site_and_loops_are_skipped_with_a_warning(linked_site, tmp_path):
    result = read(linked_site)
    assert sorted(p.path for p in result.posts) == [
        "_posts/2025-01-01-a.md", "_posts/2025-01-07-linked-in.md", "_posts/in-site/2025-01-04-shared.md"]
    never = "outside the site (links out of the site are never followed)"
    once = "a folder is read once"
    assert sorted((p.where.split("/site/", 1)[-1], p.message) for p in result.problems) == [
        ("_posts/2025-01-02-hostname.md", f"skipped: a symbolic link to {os.path.realpath('/etc/hostname')}, {never}"),
        ("_posts/2025-01-03-secret.md",
         f"skipped: a symbolic link to {tmp_path}/outside/2025-01-05-secret.md, {never}"),
        ("_posts/escape", f"skipped: a symbolic link to {tmp_path}/outside/more, {never}"),
        ("_posts/in-site-again", f"skipped: a symbolic link to a folder already read ({linked_site}/shared); {once}"),
        ("_posts/loop", f"skipped: a symbolic link to a folder already read ({linked_site}/_posts); {once}"),
    ]


def test_a_folder_reached_by_a_link_and_directly_keeps_its_own_path(tmp_path):
    site = tmp_path / "site"
    (site / "_posts" / "real").mkdir(parents=True)
    (site / "_config.yml").write_text("timezone: UTC\n")
    (site / "_posts" / "real" / "2025-01-01-a.md").write_text("---\ntitle: A\n---\n")
    (site / "_posts" / "a-link").symlink_to("real")
    result = read(site)
    assert [p.path for p in result.posts] == ["_posts/real/2025-01-01-a.md"]
    assert [p.where.split("/site/", 1)[-1] for p in result.problems] == ["_posts/a-link"]


def test_a_fifo_among_the_posts_is_skipped_not_waited_on(tmp_path):
    (tmp_path / "_posts").mkdir()
    (tmp_path / "_config.yml").write_text("timezone: UTC\n")
    os.mkfifo(tmp_path / "_posts" / "2025-01-01-pipe.md")
    (tmp_path / "_posts" / "2025-01-02-ok.md").write_text("---\ntitle: OK\n---\n")
    result = read(tmp_path)
    assert [p.title for p in result.posts] == ["OK"]
    assert [p.message for p in result.problems] == ["skipped: not a regular file"]


def test_only_dated_post_files_below_posts_are_read_not_hidden_special_backup_or_other_files(tmp_path):
    (tmp_path / "_posts").mkdir()
    (tmp_path / "_config.yml").write_text("timezone: UTC\n")
    for name in (".2025-01-01-hidden.md", "_2025-01-01-under.md", "#2025-01-01-lock.md", "~2025-01-01-tilde.md",
                 "2025-01-01-backup.md~", "2025-01-01-text.txt", "undated.md", "2025-01-01-ok.MD",
                 "2025-01-02-page.html"):
        (tmp_path / "_posts" / name).write_text("---\ntitle: T\n---\n")
    (tmp_path / "2025-01-03-outside.md").write_text("---\ntitle: T\n---\n")
    result = read(tmp_path)
    assert sorted(p.path for p in result.posts) == ["_posts/2025-01-01-ok.MD", "_posts/2025-01-02-page.html"]
    assert result.problems == []


def test_a_plain_folder_reads_every_post_file_but_hidden_special_backup_and_other_files(tmp_path):
    (tmp_path / "notes").mkdir()
    for name in (".hidden.md", "_under.md", "#lock.md", "~tilde.md", "backup.md~", "text.txt", "md", ".md",
                 "ok.MD", "notes/page.html"):
        (tmp_path / name).write_text("---\ntitle: T\ndate: 2025-01-01\n---\n")
    result = read(tmp_path)
    assert sorted(p.path for p in result.posts) == ["notes/page.html", "ok.MD"]
    assert result.problems == []


# -- through the command line ----------------------------------------------------------------------------------

BAD = sorted(name for name, _ in SKIPPED)
EXPECTED_WARNINGS = sorted(f"warning: site/_posts/{name}:{line}: {message}" for (name, line), message in SKIPPED.items())


@pytest.fixture
def sample_with_bad_posts(tmp_path, monkeypatch):
    """The sample newsletter, with the posts that cannot be built added to its site; returns an invoker."""
    shutil.copytree(ROOT / "site", tmp_path / "site")
    shutil.copytree(ROOT / "subscribers", tmp_path / "subscribers")
    for name in BAD:
        shutil.copy(HOSTILE / "_posts" / name, tmp_path / "site" / "_posts" / name)
    text = (ROOT / "newsletter.toml").read_text() + f'\n[render]\ntemplates = "{ROOT / "templates"}"\n'
    (tmp_path / "newsletter.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL")

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["--now", "2026-01-05T07:00:00+00:00", *args], catch_exceptions=False)

    return invoke


def warnings_of(stderr: str) -> list[str]:
    return sorted(line for line in stderr.splitlines() if line.startswith("warning: "))


@pytest.mark.parametrize("command", [["check"], ["posts", "--json"], ["preview", "--out", "previews"]])
def test_every_command_goes_on_past_the_bad_posts(sample_with_bad_posts, command):
    result = sample_with_bad_posts(*command)
    assert result.exit_code == 0, result.output
    assert warnings_of(result.stderr) == EXPECTED_WARNINGS
    if command[0] == "posts":
        assert len(json.loads(result.stdout)) == 14


def test_strict_turns_the_bad_posts_into_a_failure(sample_with_bad_posts):
    strict = sample_with_bad_posts("--strict", "check")
    assert strict.exit_code == 1
    assert warnings_of(strict.stderr) == EXPECTED_WARNINGS
    assert strict.stderr.endswith("error: 6 warning(s) and --strict was given\n")


def test_send_goes_on_past_the_bad_posts(sample_with_bad_posts):
    assert sample_with_bad_posts("subscribers", "import", "subscribers/sample.csv").exit_code == 0
    result = sample_with_bad_posts("send", "weekly")
    assert result.exit_code == 0, result.output
    assert warnings_of(result.stderr) == EXPECTED_WARNINGS
    status = json.loads(sample_with_bad_posts("status", "--json").stdout)
    assert [(issue["newsletter"], issue["counts"]) for issue in status] == [("weekly", {"sent": 8})]


def test_front_matter_nested_past_the_bound_is_refused_and_within_it_kept(tmp_path):
    (tmp_path / "_posts").mkdir()
    (tmp_path / "_config.yml").write_text("timezone: UTC\n")
    (tmp_path / "_posts" / "2025-01-01-deep.md").write_text(f"---\ntitle: Deep\nx: {'[' * 70}{']' * 70}\n---\n")
    (tmp_path / "_posts" / "2025-01-02-shallow.md").write_text(f"---\ntitle: Shallow\nx: {'[' * 60}{']' * 60}\n---\n")
    result = read(tmp_path)
    assert [p.title for p in result.posts] == ["Shallow"]
    assert [(p.line, p.message) for p in result.problems] == [
        (3, "invalid YAML front matter: nested more than 64 levels deep")]
