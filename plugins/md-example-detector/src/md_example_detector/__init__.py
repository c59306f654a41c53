"""An example third-party pattern detector for md-framework (CONTRIBUTING.md walk-through)."""
