"""Placement: the kube-scheduler extender verbs (filter, prioritize, bind)."""
