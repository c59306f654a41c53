"""Medical-domain prompts for md-framework (an example domain plugin)."""
