"""newsletter.toml: defaults, values inherited from Jekyll's _config.yml, and every problem reported at once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from newsletter.config import DEFAULT_SUBJECT, load_config
from newsletter.errors import ConfigError, UnknownNameError

from .conftest import FIXTURES, ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "newsletter.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_bare_source_is_enough_and_jekyll_keys_are_inherited(tmp_path):
    config = load_config(write(tmp_path, f'[site]\nsource = "{FIXTURES / "jekyll" / "site"}"\n'))
    site = config.site
    assert (site.title, site.url, site.baseurl, site.timezone.key) == (
        "Fixture Site", "https://example.org", "/blog", "America/New_York")
    assert (site.permalink, site.excerpt_separator, site.future, site.is_jekyll) == ("date", "\n\n", False, True)
    assert site.absolute_base == "https://example.org/blog"
    assert config.newsletters == {}
    assert config.web_base_url == "https://example.org/blog"
    assert config.delivery.from_addr == "Fixture Site <newsletter@example.org>"
    assert config.warnings == []


def test_newsletter_toml_overrides_jekyll_and_paths_are_relative_to_the_config_file(tmp_path):
    site = tmp_path / "blog"
    (site / "_posts").mkdir(parents=True)
    (site / "_config.yml").write_text("timezone: Europe/Paris\nurl: https://a.example.org\npermalink: pretty\n")
    path = write(tmp_path, '[site]\nsource = "blog"\ntimezone = "Asia/Tokyo"\npermalink = "none"\n'
                           '[render]\ntemplates = "my-templates"\n[web]\nbase_url = "https://news.example.org/"\n')
    config = load_config(path)
    assert config.site.source == site.resolve()
    assert (config.site.timezone.key, config.site.permalink, config.site.url) == (
        "Asia/Tokyo", "none", "https://a.example.org")
    assert config.templates == tmp_path / "my-templates"
    assert config.web_base_url == "https://news.example.org"


def test_newsletter_defaults(tmp_path):
    config = load_config(write(tmp_path, f'[site]\nsource = "{FIXTURES / "plain-folder"}"\ntitle = "Blog"\n'
                                         "[newsletters.weekly]\n"))
    weekly = config.newsletter("weekly")
    assert (weekly.title, weekly.categories, weekly.exclude_categories, weekly.max_posts) == ("Blog", (), (), 10)
    assert (weekly.window, weekly.subject, weekly.template) == (timedelta(days=7), DEFAULT_SUBJECT, "digest")
    assert config.site.is_jekyll is False


def test_every_problem_is_reported_at_once_naming_file_and_key(tmp_path):
    path = write(tmp_path, """
[site]
source = "missing-folder"
timezone = "Mars/Olympus"
url = "example.org"
future = "yes"

[newsletters.Weekly]
max_posts = 0
window = "a week"
categories = "Technology"
template = "../etc/passwd"

[newsletters.ok]
exclude_categories = [["nested"]]

[delivery]
from = "not an address"
reply_to = "Editors <editors@example.org>\\r\\nBcc: x@example.org"
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    where = str(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{where}: site.source: {(tmp_path / 'missing-folder').resolve()} is not a folder of posts or a Jekyll site",
        f"{where}: site.timezone: 'Mars/Olympus' is not an IANA time zone name, like Europe/Paris or UTC",
        f"{where}: site.url: 'example.org' must be an absolute http(s) URL, like https://blog.example.org",
        f"{where}: site.future: must be a bool, not str 'yes'",
        f"{where}: newsletters.Weekly: the id must be lower-case letters, digits, '-' or '_' (it names files)",
        f"{where}: newsletters.Weekly.max_posts: must be at least 1, not 0",
        f"{where}: newsletters.Weekly.window: 'a week' is not a duration; write a positive number and a unit, "
        "like 7d, 2w or 12h",
        f"{where}: newsletters.Weekly.template: '../etc/passwd' must be a template name under templates/",
        f"{where}: newsletters.ok.exclude_categories: must be a list of strings, like [\"Technology\"], "
        "not [['nested']]",
        f"{where}: delivery.from: 'not an address' is not an address like \"Blog <news@example.org>\"",
        f"{where}: delivery.reply_to: must not contain a line break",
    ]


def test_unknown_keys_warn_but_do_not_fail(tmp_path):
    config = load_config(write(tmp_path, f'colour = "blue"\n[site]\nsource = "{FIXTURES / "plain-folder"}"\n'
                                         'titel = "typo"\n[newsletters.a]\nmax_post = 3\n'))
    assert [str(p).split(": ", 1)[1] for p in config.warnings] == [
        "site.titel: unknown key, ignored (known keys: title, url, baseurl, source, timezone, permalink, "
        "excerpt_separator, future, cache)",
        "colour: unknown section or key, ignored (known: site, delivery, database, render, web, newsletters)",
        "newsletters.a.max_post: unknown key, ignored (known keys: title, description, categories, "
        "exclude_categories, max_posts, window, subject, template, schedule, timezone, catch_up, max_lookback, "
        "archive)",
    ]


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 1"):
        load_config(write(tmp_path, "[site\n"))
    with pytest.raises(ConfigError, match="no such config file; pass --config PATH or --source PATH"):
        load_config(tmp_path / "nope.toml")


def test_unknown_newsletter_names_the_known_ones():
    config = load_config(ROOT / "newsletter.toml")
    with pytest.raises(UnknownNameError, match=r"has no newsletter 'daily' under \[newsletters\] \(known: lab, wee"):
        config.newsletter("daily")


def test_the_sample_config_is_clean():
    config = load_config(ROOT / "newsletter.toml")
    assert config.warnings == []
    assert sorted(config.newsletters) == ["lab", "weekly"]
    assert config.site.timezone.key == "Europe/London"


def test_a_hostile_jekyll_config_is_a_config_error_not_a_traceback(tmp_path):
    (tmp_path / "_posts").mkdir()
    (tmp_path / "_config.yml").write_text("title: x\nbuilt: 2025-02-30\n")
    with pytest.raises(ConfigError) as impossible:
        load_config(None, source_override=tmp_path)
    assert [str(p) for p in impossible.value.problems] == [
        f"newsletter.toml: site.source: {tmp_path / '_config.yml'} (line 2) cannot be used: invalid date "
        "'2025-02-30' in front matter: day is out of range for month"]
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcde", "bcdef"))
    (tmp_path / "_config.yml").write_text(laughs)
    with pytest.raises(ConfigError) as expanding:
        load_config(None, source_override=tmp_path)
    assert "aliases expand it to more than 10,000 values" in str(expanding.value.problems[0])
