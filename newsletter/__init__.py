"""newsletter: Markdown posts in, email digests out."""

__version__ = "0.1.0"
