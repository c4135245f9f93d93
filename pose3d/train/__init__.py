"""Training on Ray Train: the typed config, the stage schedule, the per-worker loop, the trainer
(TorchTrainer + Ray Data), checkpoints, validation and TensorBoard.

May import: data, model, eval, infra, math and facts. Not tune or the command line.
"""
