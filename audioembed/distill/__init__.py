"""Distillation: DistilHuBERT students from one or several teachers, and task-vector merging.

Rooms, one job each:

* :mod:`.student`  -- build / initialise the student ``HubertModel``; weight fingerprints
* :mod:`.heads`    -- per-teacher prediction heads (MLP "expand-last", light-conv, shared)
* :mod:`.loss`     -- L1 - lambda * log sigmoid(cos) terms per sample and target layer
* :mod:`.align`    -- teacher frames -> student frames (e.g. MERT-v1 75 Hz -> 50 Hz)
* :mod:`.data`     -- corpus manifests with domains, crop plans, the stateless step sampler
* :mod:`.teachers` -- the teachers, loaded and frozen, with their target layers
* :mod:`.cache`    -- teacher target cache (float16 HDF5 through the feature store);
  :func:`~.cache.prepare_teacher_cache` plans the crops and builds it
* :mod:`.pcgrad`   -- gradient surgery between teachers' losses
* :mod:`.config`   -- :class:`~.config.DistillConfig` and its sections
* :mod:`.trainer`  -- the loop: the step, exact resume, DDP, logs
* :mod:`.merge`    -- task vectors, linear and TIES merging

Config files, the optimiser, checkpoints and the log are the shared training layer
(:mod:`audioembed.training`); the student folder format is :mod:`audioembed.models.student_folder`.
"""
