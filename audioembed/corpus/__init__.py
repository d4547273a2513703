"""Corpus builders: deterministic, labelled speech and music corpora made offline.

Pretrained teachers cannot be downloaded on every machine, so the project makes its own
training and evaluation audio: text-to-speech of the CMU ARCTIC prompts (``speech``) and
MIDI rendered through General MIDI soundfonts (``music``). Each builder writes audio files
and one manifest (``manifest.csv``) that ``audioembed extract``, ``downstream`` and
``distill`` read directly.
"""
