"""The training data path: reading shards (``shards``), batch augmentation and targets
(``augment``), exact 3D/2D mixing (``mixing``), shard-set summaries (``inspect``).

May import: pose3d's facts and math, and Ray Data. Not the model, training or evaluation.
"""
