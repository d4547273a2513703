"""``audioembed data``: the datasets the tasks know, where they live, and how to get them."""

from __future__ import annotations

import click


@click.group("data", epilog="""\b
Examples:
  audioembed data list
  audioembed data get fsdd
  audioembed downstream classify --data "$(audioembed data path fsdd)" --label-column digit
""")
def data_group():
    """List, download and locate the standard datasets of the downstream tasks."""


@data_group.command("list", epilog="""\b
Examples:
  audioembed data list
""")
def list_command():
    """Every known dataset: tasks, size, whether it is installed, licence."""
    from ..datasets import DATASETS, ENV_VAR, TASK_DEFAULTS, data_home, dataset_folder
    from ..download import ALGORITHM_NAMES

    click.echo(f"data home: {data_home()}  (${ENV_VAR} to change)")
    width = max(len(n) for n in DATASETS)
    for dataset in DATASETS.values():
        folder = dataset_folder(dataset)
        installed = "installed" if (folder / dataset.data_path).exists() and folder.is_dir() else (
            "manual" if not dataset.downloadable else "not installed")
        default_for = [t for t in dataset.tasks if TASK_DEFAULTS.get(t) == dataset.name]
        tasks = ", ".join(f"{t} (default)" if t in default_for else t for t in dataset.tasks)
        click.echo(f"  {dataset.name:<{width}}  {installed:<13} {dataset.size:>7}  tasks: {tasks}")
        click.echo(f"  {'':<{width}}  {dataset.title}; licence: {dataset.licence}")
        if dataset.downloadable:
            kinds = sorted({f.checksum[0] for f in dataset.files if f.checksum})
            checked = (" and ".join(ALGORITHM_NAMES[k] for k in kinds) + " checked") if kinds else ""
            unpinned = "no published checksum" if any(f.checksum is None for f in dataset.files) else ""
            click.echo(f"  {'':<{width}}  download: {'; '.join(x for x in (checked, unpinned) if x)}")


@data_group.command("get", epilog="""\b
Examples:
  audioembed data get fsdd        # no published checksum: says that the download is not verified
  audioembed data get gtzan       # checked against the SHA-256 that TensorFlow Datasets and torchaudio pin
""")
@click.argument("name")
@click.option("--no-verify", is_flag=True,
              help="Do not check downloads against their published checksums (e.g. a mirror that repacks them).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to confirm the licence.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def get_command(name, no_verify, yes, quiet):
    """Download NAME from its official source, check it, and unpack it where the task loader reads it.

    Interrupted downloads continue where they stopped when the same command is rerun.
    """
    from ..datasets import dataset_folder, get_dataset
    from ..download import install
    from ..output_paths import check_output_dir

    dataset = get_dataset(name)
    folder = dataset_folder(dataset)
    click.echo(f"{dataset.name}: {dataset.title}", err=True)
    click.echo(f"licence: {dataset.licence} ({dataset.homepage})", err=True)
    if dataset.downloadable and not yes:
        click.confirm(f"download {dataset.size} into {folder} under this licence?", default=True, abort=True, err=True)
    check_output_dir(folder, "dataset folder")
    path = install(dataset, verify=not no_verify, progress=not quiet, log=lambda m: click.echo(m, err=True))
    click.echo(str(path))


@data_group.command("path", epilog="""\b
Examples:
  audioembed data path gtzan
""")
@click.argument("name")
def path_command(name):
    """Print where NAME is (or would be) installed: the path to give to --data."""
    from ..datasets import dataset_folder, get_dataset

    dataset = get_dataset(name)
    click.echo(str(dataset_folder(dataset) / dataset.data_path))
