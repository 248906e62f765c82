"""Tests of evidence/."""
