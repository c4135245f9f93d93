"""Evaluation: prediction (in memory and as a Ray Data job), the one scorer, and reports."""
