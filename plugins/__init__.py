"""Built-in upstream plugins (installed as ``audioembed_plugins``).

Each module is its own entry point in audioembed's pyproject.toml, registered exactly as a
third-party package would register its models.
"""
