"""What every trainer (``audioembed distill``, ``audioembed pretrain``) shares.

* :mod:`.config`: reading TOML/YAML configs, ``--set`` overrides, field checks, TOML dumps;
* :mod:`.optim`: AdamW with linear warm-up and linear decay;
* :mod:`.checkpoints`: the run folder (its ``config.toml`` guards against resuming another
  run), atomic checkpoints, and falling back to the previous checkpoint when the last one
  cannot be read;
* :mod:`.runlog`: ``log.jsonl``, truncated to the checkpoint's step on resume.

Nothing here knows about teachers, students or units; ``distill`` and ``pretrain`` build on it.
"""
