"""Test helpers: backends, the simulated device, S3 servers, the audio harness, retention oracles."""
