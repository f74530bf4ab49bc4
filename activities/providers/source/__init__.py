"""Source checkouts."""
