"""md-framework's default plugins.

They use only md_framework's public API and are registered through entry points in
pyproject.toml, exactly as a third-party plugin would be: any of them can be blocked in
config (``plugins.disable``) or replaced by another driver name.
"""
