"""Packaging: a build directory's report.json -> the signed `<model>-<version>-<target>.tar`.

manifest.py builds and validates `manifest.json` (schema edgebuild.manifest/1), tarball.py writes
reproducible tars and reads untrusted ones safely, signing.py signs with OpenSSF model-signing,
bundle.py ties them together (package, verify).
"""
