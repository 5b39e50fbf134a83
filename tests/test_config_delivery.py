"""[delivery] from and reply_to: one valid address each, and a default From that is always one address."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.errors import ConfigError
from newsletter.message import MessageTemplate
from newsletter.render import Recipient

from .conftest import FIXED_NOW, FIXTURES
from .test_message import digest_of, parse


def config_with(tmp_path: Path, site: str, delivery: str = "") -> Path:
    path = tmp_path / "newsletter.toml"
    path.write_text(f'[site]\nsource = "{FIXTURES / "plain-folder"}"\n{site}\n[delivery]\n{delivery}\n',
                    encoding="utf-8")
    return path


def headers_for(sender: str):
    template = MessageTemplate(digest_of("S", "<p>x</p>", "x"), sender=sender, reply_to=None,
                               list_id=("Weekly", "weekly"), date=FIXED_NOW)
    return parse(template.render(Recipient("r@example.org"), "<1@x>"))


def test_a_title_with_a_comma_is_quoted_in_the_default_from(tmp_path):
    config = load_config(config_with(tmp_path, 'title = "Harbour, Light"\nurl = "https://harbour.example.org/blog"'))
    assert config.delivery.from_addr == '"Harbour, Light" <newsletter@harbour.example.org>'
    msg = headers_for(config.delivery.from_addr)
    assert [(a.display_name, a.addr_spec) for a in msg["From"].addresses] == [
        ("Harbour, Light", "newsletter@harbour.example.org")]


def test_a_title_with_line_breaks_cannot_move_the_domain_of_message_id_or_list_id(tmp_path):
    config = load_config(config_with(tmp_path, 'title = "Blog\\r\\nevil.com"\nurl = "https://blog.example.org:8443/"'))
    assert config.delivery.from_addr == '"Blog evil.com" <newsletter@blog.example.org>'
    msg = headers_for(config.delivery.from_addr)
    assert msg["List-Id"] == "Weekly <weekly.blog.example.org>"
    assert msg["From"].addresses[0].display_name == "Blog evil.com"


def test_an_internationalised_site_gives_an_idna_from_on_the_wire(tmp_path):
    config = load_config(config_with(tmp_path, 'title = "Bücher"\nurl = "https://bücher.example"'))
    assert config.delivery.from_addr == "Bücher <newsletter@bücher.example>"
    assert headers_for(config.delivery.from_addr)["From"] == "Bücher <newsletter@xn--bcher-kva.example>"


def test_no_site_url_leaves_a_localhost_from_for_the_outbox(tmp_path):
    config = load_config(config_with(tmp_path, 'title = "Blog"'))
    assert config.delivery.from_addr == "Blog <newsletter@localhost>"


@pytest.mark.parametrize("url, why", [
    ("https://192.168.1.10:4000", "'newsletter@192.168.1.10' is not a valid address: The part after the @-sign is "
                                  "not valid. It is not within a valid top-level domain."),
    ("https://blog_x.example.org", "'newsletter@blog_x.example.org' is not a valid address: The part after the "
                                   "@-sign contains invalid characters: '_'."),
])
def test_a_site_url_that_makes_no_valid_from_is_a_config_error_naming_the_key(tmp_path, url, why):
    path = config_with(tmp_path, f'title = "Blog"\nurl = "{url}"')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: delivery.from: is not set, and no From address can be made from site.url {url!r} ({why}); set "
        'it, like from = "Blog <news@example.org>"']


@pytest.mark.parametrize("value, why", [
    ("news@example.org, boss@example.org", "'news@example.org, boss@example.org' holds 2 addresses; give exactly "
                                           "one, and quote a name with a comma or other punctuation, like "
                                           '"\\"Harbour, Light\\" <news@example.org>"'),
    ("Harbour, Light <news@example.org>", "'Harbour, Light <news@example.org>' holds 2 addresses; give exactly "
                                          "one, and quote a name with a comma or other punctuation, like "
                                          '"\\"Harbour, Light\\" <news@example.org>"'),
    ("Blog <news@example.org", "'Blog <news@example.org' is not an address like \"Blog <news@example.org>\""),
])
def test_from_and_reply_to_must_be_exactly_one_address(tmp_path, value, why):
    escaped = value.replace('"', '\\"')
    path = config_with(tmp_path, 'url = "https://blog.example.org"', f'from = "{escaped}"\nreply_to = "{escaped}"')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p) for p in caught.value.problems] == [f"{path}: delivery.from: {why}",
                                                       f"{path}: delivery.reply_to: {why}"]


def test_a_quoted_name_with_a_comma_is_one_address(tmp_path):
    config = load_config(config_with(tmp_path, 'url = "https://blog.example.org"',
                                     'from = "\\"Harbour, Light\\" <news@example.org>"'))
    assert config.delivery.from_addr == '"Harbour, Light" <news@example.org>'
