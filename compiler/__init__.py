"""edgebuild: a build system for machine-learning models.

The flow is one direction: recipe + target -> import -> passes -> verify -> compile -> verify
-> build record. Each stage is a pure function of its inputs, cached by content (see cache.py).
"""

import os

# Both libraries record usage telemetry by default; every process that imports them must opt out
# before the import, so this runs when the package is first imported.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__version__ = "0.1.0"
