"""Scan model artifacts for code that runs when they are loaded, and for tampering, without
ever loading them (issue 5)."""
