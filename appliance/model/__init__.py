"""Profiles: parsing and validation into frozen dataclasses. Pure."""
