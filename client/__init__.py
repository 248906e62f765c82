"""The officer's, auditor's and administrator's command line: talks to the service over HTTP only.

It needs no database, no web framework and no object-store SDK, so it installs alone
on a laptop (`pip install 'countersign[client]'`).
"""
