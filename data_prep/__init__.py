"""Raw datasets -> Parquet shards (a Ray Data job): ``readers`` (one per format), ``crop`` (one
sample -> one row), ``writer`` (the resumable job), ``synthetic`` (the generator).

May import: pose3d's facts, math, data and infra. Not training, evaluation or the command line.
"""
