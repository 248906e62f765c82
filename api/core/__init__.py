"""The service's core: settings, database, models, the audit log writer, storage, keys, tokens.

Everything else in the service (routes, ingest, retrieval, search) and the retention
domain build on this package; it imports nothing of theirs.
"""
