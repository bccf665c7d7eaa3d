"""The build engine: load recipes and targets (config.py), run the one driver (driver.py) through
the content-addressed cache (cache.py) with keys from what runs (fingerprint.py), gate fidelity
and speed (gates.py), and write the build directory (build.py, report.py, record.py)."""
