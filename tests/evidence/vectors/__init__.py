"""Golden vectors of the evidence bundle format (tests/evidence/test_bundle_golden.py)."""
