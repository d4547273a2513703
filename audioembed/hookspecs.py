"""The plugin hooks of audioembed.

A plugin is a module (or object) exposed through the ``audioembed`` entry-point group of
an installed distribution::

    [project.entry-points.audioembed]
    my_models = "my_package.audioembed_plugin"

and implements one or both hooks below with ``@audioembed.hookimpl`` (or names a
:class:`SpecPlugin` object: ``"my_package.catalog:my_models"``). The built-in upstreams and
tasks are registered the same way, from audioembed's own pyproject.toml. Listing plugins
imports every such module, so it must stay light: name the code that builds a model or a task
with :class:`audioembed.LazyImport` (docs/plugins.md).
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "audioembed"
ENTRY_POINT_GROUP = "audioembed"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def audioembed_upstreams():
    """Return a list of :class:`audioembed.upstream.UpstreamSpec` this plugin provides.

    Keep this cheap: make each ``load`` a :class:`audioembed.LazyImport` of the module that
    builds the model (or import heavy dependencies inside ``load``), so listing plugins imports
    neither the model code nor torch.
    """


@hookspec
def audioembed_tasks():
    """Return a list of :class:`audioembed.upstream.TaskSpec` this plugin provides."""


@hookspec
def audioembed_dsuperb_judges():
    """Return a list of :class:`audioembed.dsuperb.judges.JudgeSpec` for ``dsuperb score --judge NAME``.

    A judge grades one free-text answer of a spoken language model, e.g. with an LLM as the
    Dynamic-SUPERB paper does: ``judge(instruction, label, response)`` returns a score in
    [0, 1] (1.0 correct) or None when the answer cannot be judged (counted as N/A). Keep this
    cheap: create API clients or load models inside the callable, on first use.
    """


class SpecPlugin:
    """A plugin object that registers fixed lists of specs.

    One entry point may name an instance (``hf = "my_package.catalog:hf"``), so a package can
    list all its upstreams and tasks in one light module, each ``load``/``build`` a
    :class:`audioembed.LazyImport` of the module that implements it.
    """

    def __init__(self, upstreams: list | tuple = (), tasks: list | tuple = ()) -> None:
        self.upstreams = list(upstreams)
        self.tasks = list(tasks)

    @hookimpl
    def audioembed_upstreams(self):
        return self.upstreams

    @hookimpl
    def audioembed_tasks(self):
        return self.tasks

    def __repr__(self) -> str:
        names = [spec.name for spec in (*self.upstreams, *self.tasks)]
        return f"SpecPlugin({', '.join(names)})"
