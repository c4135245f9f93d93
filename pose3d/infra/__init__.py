"""Running Ray: the local Ray session, a local multi-node cluster, and job submission.

May import: facts (storage). Nothing above.
"""
