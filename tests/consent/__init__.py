"""Tests of consent/."""
