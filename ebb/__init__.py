"""Ebb's shared core: the object model, resource arithmetic, Kubernetes access and
the operational plumbing (settings, logs, metrics, HTTP) both daemons use.

Neither daemon imports the other; both import only from here.
"""
