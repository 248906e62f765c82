"""Consent notices (versioned, Japanese and English) and consent records."""
