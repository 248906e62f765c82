"""End-to-end suites: real CLI processes against a live server, real audio, several processes."""
