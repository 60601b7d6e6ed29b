"""Apps: plugin discovery (entry point group `llmos.apps`) and, later, manifests."""
