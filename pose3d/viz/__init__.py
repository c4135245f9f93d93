"""Drawing: 2D skeletons on crops, 3D skeletons, and report figures (matplotlib, no Ray).

May import: facts and math. No Ray.
"""
