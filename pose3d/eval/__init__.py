"""Evaluation: prediction (in memory and as a Ray Data job), the one scorer, and reports.

May import: data, model, viz, math and facts. Not training, tune or the command line.
"""
