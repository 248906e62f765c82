"""The counter agent: consent, capture, segment, encode, encrypt, sign, spool, upload."""
