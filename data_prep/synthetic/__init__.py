"""The synthetic dataset generator (issue 3): posed 3D bodies rendered into the raw formats of
Human3.6M (lab), MPII (wild) and MPI-INF-3DHP (wild test), and on request COCO (a street set,
issue 16), so the same readers run on it.

- ``generate(out_raw, ...)`` writes the raw trees (``generator.py``; the sets in ``sets.py``, the
  file formats in ``formats.py``);
- ``prepare(out, ...)`` generates and runs the shard writer on them;
- ``list_tasks`` / ``read_task`` make this package a reader for ``data_prep.writer``
  (``reader.py``).

Modules: ``bvh`` and ``asfamc`` (BVH and ASF/AMC parsing and forward kinematics), ``posebank``
(the pose bank from CMU motion capture, its pose clusters and the pose gap), ``posegap`` (the gap
measured on real fixtures and on the synthetic sets), ``body`` (proportions, clothing, volumes,
extra joints), ``render`` (ray-cast capsules and ellipsoids), ``backgrounds``, ``scene`` (one shot
and its labels).
"""

from data_prep.synthetic.generator import SIZES, generate, prepare
from data_prep.synthetic.reader import list_tasks, read_task

__all__ = ["SIZES", "generate", "list_tasks", "prepare", "read_task"]
