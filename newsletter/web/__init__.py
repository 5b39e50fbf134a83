"""`newsletter serve`: the subscribers' web pages (unsubscribe, preferences, sign-up, archive)."""
