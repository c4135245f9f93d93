"""Hyperparameter search and the paper's ablation on Ray Tune (``pose3d tune``, ``pose3d best``):
``space`` (search-space YAML), ``plan`` (what a search is), ``trial`` (one trial), ``asha``
(the resumable scheduler), ``driver`` (stage 1, the Tuner, resume), ``best``, ``ablation``.

May import: training, evaluation and everything below. Not the command line.
"""
