"""Built-in downstream task plugins (installed as ``audioembed_downstreams``).

:mod:`audioembed_downstreams.catalog` registers the tasks; a task's module is imported when it runs.
"""
