"""Model code shared by the core and the trainers.

* :mod:`.hf_encoder`: the padding-exact wrapper of wav2vec 2.0-style transformers encoders
  (HuBERT, wav2vec 2.0, WavLM, data2vec-audio, MERT, students);
* :mod:`.student_folder`: the student checkpoint format (save, read metadata, load).

Plugins (``audioembed_plugins``) build on these and register upstreams; nothing here
imports a plugin.
"""
