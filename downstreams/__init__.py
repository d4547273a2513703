"""Built-in downstream task plugins (installed as ``audioembed_downstreams``)."""
