"""An example third-party audioembed plugin.

It registers one weight-free upstream, ``example_energy``: per 25 ms frame (10 ms hop) the
log-energy and the zero-crossing rate (model code in :mod:`audioembed_example_plugin.energy`).
It only uses audioembed's public API.

This module is what the entry point names, and audioembed imports it whenever it lists
plugins, so it stays light: ``load`` is a :class:`~audioembed.LazyImport` naming the loader,
and torch and the model code are imported only when ``example_energy`` is loaded.
"""

from __future__ import annotations

from audioembed import LazyImport, UpstreamSpec, hookimpl

__all__ = ["audioembed_upstreams"]


@hookimpl
def audioembed_upstreams():
    return [
        UpstreamSpec(
            name="example_energy",
            load=LazyImport("audioembed_example_plugin.energy:load_energy"),
            summary="Example plugin: frame log-energy and zero-crossing rate (2 layers)",
        )
    ]
