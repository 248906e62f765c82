"""Countersign: consented, encrypted, signed and audited audio evidence."""
