"""``python -m audioembed.dsuperb ...``: the same commands as ``audioembed dsuperb ...``."""

from .commands import dsuperb_group

dsuperb_group(prog_name="audioembed dsuperb")
