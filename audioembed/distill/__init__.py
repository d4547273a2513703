"""Distillation: DistilHuBERT students from one or several teachers, and task-vector merging.

Rooms, one job each:

* :mod:`.student`  -- build / initialise the student ``HubertModel``; weight fingerprints
* :mod:`.heads`    -- per-teacher prediction heads (MLP "expand-last", light-conv, shared)
* :mod:`.loss`     -- L1 - lambda * log sigmoid(cos) terms per sample and target layer
* :mod:`.align`    -- teacher frames -> student frames (e.g. MERT-v1 75 Hz -> 50 Hz)
* :mod:`.data`     -- corpus manifests with domains, crop plans, the stateless step sampler
* :mod:`.cache`    -- teacher target cache (float16 HDF5 through the feature store)
* :mod:`.pcgrad`   -- gradient surgery between teachers' losses
* :mod:`.config`   -- the training config (TOML/YAML + ``--set`` overrides)
* :mod:`.trainer`  -- the loop: optimiser, schedule, checkpoints with exact resume, DDP, logs
* :mod:`.merge`    -- task vectors, linear and TIES merging
"""
