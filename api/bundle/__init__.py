"""The evidence bundle: assembling it, its custody report and its RFC 3161 time-stamp."""
