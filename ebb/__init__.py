"""Ebb's shared core: the object model, resource arithmetic, Kubernetes access and
the operational plumbing (settings, logs, metrics, HTTP) both daemons use.

Neither daemon imports the other; both import only from here.
"""

import importlib.metadata

DISTRIBUTION = "ebb-batch"  # the PyPI name: `ebb` belongs to an unrelated project


def version() -> str:
    """This Ebb's version, or "unknown" when run from a checkout that was never installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
