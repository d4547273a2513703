"""Teacher pretraining: HuBERT-style (speech) and MERT-style (music) masked prediction.

The results are plain ``transformers.HubertModel`` ``save_pretrained`` folders, loaded by the
``hubert`` and ``mert`` upstreams through the same code path as the released checkpoints.

Modules (imported on use, nothing heavy here):

* :mod:`.targets`: MFCC / log-mel / chroma / CQT-like band frames on the model's frame grid,
  k-means codebooks;
* :mod:`.model`: span masking, the encoder with its prediction heads, saving teachers;
* :mod:`.config`: :class:`~.config.PretrainConfig` and its per-kind defaults (files,
  ``--set``, checkpoints and the log are the shared :mod:`audioembed.training` layer);
* :mod:`.trainer`: the loop (:class:`~.trainer.PretrainTrainer`, :func:`~.trainer.pretrain`);
* :mod:`.commands`: the ``audioembed pretrain`` click command.

See docs/pretraining.md.
"""
