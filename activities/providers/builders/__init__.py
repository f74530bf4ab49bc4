"""Builders of artifacts (wheels, images) and the registries that hold them."""
