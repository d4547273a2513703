"""The offline reproduction: corpora -> teachers -> students -> merges -> evaluation -> results.

No pretrained weights can be downloaded on this project's machines, so the papers' pipeline
is run end to end on audio the project makes itself, with its own commands, stage by stage
(``audioembed reproduce -c recipes/offline/offline.toml``). Every stage writes into one run
folder and leaves a marker when done, so an interrupted run continues where it stopped.
"""
