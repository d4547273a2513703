"""The core's subcommands, one module per job; ``audioembed.cli`` imports each on first use.

Modules here import only click at module level: heavy imports (torch, h5py, the probes) happen
inside the command functions, so listing commands or asking for ``--help`` stays fast.
"""
