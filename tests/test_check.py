"""`newsletter check` renders every newsletter against a sample issue, so that a template error is found before
`send` plans an issue it cannot render."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.config import load_config
from newsletter.digest import check_newsletters
from newsletter.site import read_posts

from .conftest import FIXED_NOW, ROOT

NOW = "2026-01-05T07:00:00+00:00"


def write_config(tmp_path: Path, weekly_subject: str, extra: str = "") -> Path:
    path = tmp_path / "newsletter.toml"
    subject = weekly_subject.replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(f'[site]\nsource = "{ROOT / "site"}"\n'
                    f'[newsletters.weekly]\ntitle = "Weekly"\nsubject = "{subject}"\n'
                    '[newsletters.lab]\ncategories = ["Science"]\n'
                    '[delivery]\nfrom = "Harbourlight <news@harbourlight.example.org>"\n' + extra, encoding="utf-8")
    return path


def run_check(path: Path):
    return CliRunner().invoke(cli, ["--config", str(path), "--now", NOW, "check"], catch_exceptions=False)


def test_a_subject_syntax_error_is_reported_with_its_line_and_exit_status_2(tmp_path):
    path = write_config(tmp_path, "{{ newsletter.title ")
    result = run_check(path)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "error: the configuration cannot be used:\n"
        f"  {path}: newsletters.weekly.subject:1: template syntax error: unexpected end of template, expected "
        "'end of print statement'.\n")


def test_an_undefined_name_in_a_subject_is_reported(tmp_path):
    path = write_config(tmp_path, "{{ newsletter.title }} {{ isue.number }}")
    result = run_check(path)
    assert result.exit_code == 2
    assert result.stderr == (
        "error: the configuration cannot be used:\n"
        f"  {path}: newsletters.weekly.subject:1: 'isue' is undefined; see the README for the names templates "
        "can use\n")


def test_every_newsletter_and_template_is_checked_and_a_shared_template_reported_once(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "digest.txt.j2").write_text("{{ newsletter.title }}\n{% for post in posts %}\n{{ post.titel }}\n"
                                             "{% endfor %}\n")
    path = write_config(tmp_path, "{{ posts[0].title.upper( }}", '[render]\ntemplates = "templates"\n')
    result = run_check(path)
    assert result.exit_code == 2
    assert result.stderr == (
        "error: the configuration cannot be used:\n"
        f"  {path}: newsletters.weekly.subject:1: template syntax error: unexpected '}}', expected ')'\n"
        f"  {path}: {templates}/digest.txt.j2:3: 'dict object' has no attribute 'titel'; see the README for the "
        "names templates can use\n")


def test_the_sample_configuration_checks_clean_in_the_library():
    config = load_config(ROOT / "newsletter.toml")
    assert check_newsletters(config, read_posts(config.site, FIXED_NOW).posts, FIXED_NOW) == []


def test_without_posts_templates_are_still_compiled(tmp_path):
    config = load_config(write_config(tmp_path, "{% if %}"))
    problems = check_newsletters(config, [], FIXED_NOW)
    assert [str(p) for p in problems] == [
        f"{tmp_path}/newsletter.toml: newsletters.weekly.subject:1: template syntax error: Expected an expression, "
        "got 'end of statement block'"]
