"""The search spaces shipped with ifdd: edit the YAMLs here; installs carry them as package data of
``orchestrator.search_spaces`` (pyproject.toml), found by name through orchestrator/search/shipped.py."""
