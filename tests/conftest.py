"""Shared fixtures: the data-directory builders of ``data_fixtures`` (``kits_root``, ``demo_root``)."""

pytest_plugins = ("data_fixtures",)
