"""Packaging: a build directory's report.json -> the signed `<model>-<version>-<target>.tar`.

manifest.py builds and validates `manifest.json` (schema edgebuild.manifest/1), tarball.py writes
reproducible tars and reads untrusted ones safely, signing.py signs with OpenSSF model-signing,
bundle.py ties them together (package, verify).
"""

from compiler.packaging.bundle import PackageOutcome, bundle_name, package, verify_bundle

__all__ = ["PackageOutcome", "bundle_name", "package", "verify_bundle"]
