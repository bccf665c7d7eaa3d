"""Releases: release.toml (config.py) -> every model x target built, gated, signed and published
to the OTA repository in one commit (pipeline.py), with a report (report.py) and a CI workflow
(ci.py)."""
