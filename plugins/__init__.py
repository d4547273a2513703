"""Built-in upstream plugins (installed as ``audioembed_plugins``).

:mod:`audioembed_plugins.catalog` registers every upstream through audioembed's entry points,
exactly as a third-party package would; the other modules build the models and are imported
only when one of their upstreams is loaded.
"""
