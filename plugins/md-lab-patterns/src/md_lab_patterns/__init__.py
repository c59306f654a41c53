"""Example lab pattern recognisers for md-framework."""
