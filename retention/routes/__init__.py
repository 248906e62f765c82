"""The retention domain's HTTP routes: legal holds and retention policies."""
