"""Ebb's simulator: a workload trace on simulated EC2, on a virtual clock, decided by the
same pure code Ebb's daemons run (admission, fair share, dependencies, retries,
placement scores, the capacity planner, scale-down). `python -m sim --help`."""
