"""``audioembed plugins``: what is installed, and from where."""

from __future__ import annotations

import click


@click.command(epilog="""\b
Examples:
  audioembed plugins
  audioembed plugins | grep mert
""")
def plugins():
    """List every registered upstream and task with the distribution that provides it."""
    from ..registry import get_registry

    registry = get_registry()
    for title, table in (("upstreams", registry.upstreams), ("tasks", registry.tasks)):
        click.echo(f"{title}:")
        if not table:
            click.echo("  (none)")
        width = max((len(n) for n in table), default=0)
        for name in sorted(table):
            entry = table[name]
            click.echo(f"  {name:<{width}}  {entry.distribution} [{entry.plugin}]  {entry.spec.summary}")
    if registry.failed:
        click.echo("failed to load:")
        for key, why in sorted(registry.failed.items()):
            click.echo(f"  {key}: {why}")
