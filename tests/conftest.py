"""Shared fixtures. Tests never read ../shared and never depend on today's date."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import pytest

from newsletter.config import Config, load_config
from newsletter.posts import read_posts

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# After every fixture post, before the fixture site's future post (2030).
FIXED_NOW = datetime(2026, 1, 5, 7, 0, tzinfo=timezone.utc)


def pytest_addoption(parser):
    parser.addoption("--regenerate", action="store_true",
                     help="Rewrite the stored expected outputs (tests/expected) instead of comparing.")


@pytest.fixture
def regenerate(request) -> bool:
    return request.config.getoption("--regenerate")


def site_config(source: Path, **site_overrides) -> Config:
    config = load_config(None, source_override=source)
    if site_overrides:
        config = dataclasses.replace(config, site=dataclasses.replace(config.site, **site_overrides))
    return config


@pytest.fixture
def sample_config() -> Config:
    return load_config(ROOT / "newsletter.toml")


@pytest.fixture
def sample_posts(sample_config):
    result = read_posts(sample_config.site, FIXED_NOW)
    assert result.problems == []
    return result.posts
