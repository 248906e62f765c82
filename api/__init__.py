"""The Countersign service: verifies and stores uploads, controls and audits access."""
