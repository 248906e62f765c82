"""Retention: the pure decision (policy.py, decide.py), its database glue (store.py), the purge (purge.py, job.py)."""
