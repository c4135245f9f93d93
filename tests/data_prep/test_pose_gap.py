"""The synthetic pose gap: the ASF/AMC reader (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_prep.synthetic import asfamc

# --- ASF/AMC ---------------------------------------------------------------------------------

_ASF = """# a two-bone leg
:version 1.10
:name test
:units
  mass 1.0
  length 0.45
  angle deg
:root
   order TX TY TZ RX RY RZ
   axis XYZ
   position 0 0 0
   orientation 0 0 0
:bonedata
  begin
     id 1
     name thigh
     direction 0 -1 0
     length 2
     axis 0 0 0  XYZ
    dof rx
    limits (-160.0 20.0)
  end
  begin
     id 2
     name shin
     direction 0 -1 0
     length 3
     axis 0 0 90  XYZ
  end
:hierarchy
  begin
    root thigh
    thigh shin
  end
"""
_AMC = (  # CRLF line ends, as CMU writes them
    ":FULLY-SPECIFIED\r\n:DEGREES\r\n1\r\nroot 1 2 3 0 0 0\r\nthigh 0\r\n"
    "2\r\nroot 1 2 3 0 0 90\r\nthigh 90\r\n"
)


def _write(tmp_path: Path, asf: str = _ASF, amc: str = _AMC) -> tuple[Path, Path]:
    a, m = tmp_path / "t.asf", tmp_path / "t.amc"
    a.write_text(asf)
    m.write_bytes(amc.encode())
    return a, m


def test_asf_amc_forward_kinematics_by_hand(tmp_path: Path) -> None:
    a, m = _write(tmp_path)
    skel = asfamc.read_asf(a)
    assert [b.name for b in skel.bones] == ["thigh", "shin"]
    assert skel.length_unit_m == pytest.approx(0.0254 / 0.45)
    motion = asfamc.read_amc(m, skel)
    np.testing.assert_array_equal(motion.frame_numbers, [1, 2])
    assert motion.bones["thigh"].shape == (2, 1)
    pos, rot = asfamc.forward_kinematics(skel, motion)
    # Frame 1: rest pose at the root (1, 2, 3): the leg hangs straight down, 2 + 3 units.
    np.testing.assert_allclose(pos["thigh"][0], [1, 0, 3], atol=1e-12)
    np.testing.assert_allclose(pos["shin"][0], [1, -3, 3], atol=1e-12)
    # Frame 2: the root turns 90 degrees about z (R = Rz), the thigh 90 about x in its frame:
    # thigh end = Rz @ Rx @ (0, -2, 0) = Rz @ (0, 0, -2) = (0, 0, -2); the shin (no dofs) follows.
    np.testing.assert_allclose(pos["thigh"][1], [1, 2, 1], atol=1e-12)
    np.testing.assert_allclose(pos["shin"][1], [1, 2, -2], atol=1e-12)
    np.testing.assert_allclose(rot["shin"][1] @ rot["shin"][1].T, np.eye(3), atol=1e-12)


def test_asf_amc_reads_the_cmu_fixture(fixtures_dir: Path) -> None:
    asf, amc = fixtures_dir / "mocap" / "cmu_11.asf", fixtures_dir / "mocap" / "cmu_11_01.amc"
    if not amc.exists():
        pytest.skip(f"mocap fixture not found at {amc}")
    skel = asfamc.read_asf(asf)
    motion = asfamc.read_amc(amc, skel)
    assert len(skel.bones) == 30 and len(motion.frame_numbers) == 597
    np.testing.assert_array_equal(motion.frame_numbers, np.arange(1, 598))
    pos, _ = asfamc.forward_kinematics(skel, motion)
    for bone in skel.bones:  # every bone keeps its length in every frame
        lengths = np.linalg.norm(pos[bone.name] - pos[bone.parent], axis=-1)
        np.testing.assert_allclose(lengths, bone.length, rtol=1e-9, err_msg=bone.name)


@pytest.mark.parametrize(
    ("asf_edit", "amc_edit", "message"),
    [
        (None, ("thigh 90", "thigh 90 5"), r"t\.amc, line 8: bone thigh needs 1 values, got 2"),
        (None, ("thigh 90", "knee 90"), r"t\.amc, line 8: unknown bone 'knee'"),
        (None, ("thigh 90", "thigh ninety"), r"t\.amc, line 8: bone thigh: not a number"),
        (None, ("thigh 0\r\n", ""), r"t\.amc, line 3: frame 1 lacks thigh"),
        (None, ("90\r\nthigh 90", "90\r\nroot 0 0 0 0 0 0\r\nthigh 90"), r"line 8: bone root twice"),
        (("length 3", "lenght 3"), None, r"t\.asf, line 23: bone block lacks length"),
        (("axis 0 0 90  XYZ", "axis 0 0 90  XYY"), None, r"t\.asf, line 28: axis order"),
        (("dof rx", "dof rx rw"), None, r"t\.asf, line 20: dof must be"),
        (("direction 0 -1 0\n     length 2", "direction 0 -1\n     length 2"), None, r"line 17: direction"),
        (("thigh shin", "shin thigh"), None, r"t\.asf: the :hierarchy has a cycle|two parents"),
    ],
)  # fmt: skip
def test_malformed_asf_amc_name_the_file_and_line(
    tmp_path: Path, asf_edit: tuple[str, str] | None, amc_edit: tuple[str, str] | None, message: str
) -> None:
    asf = _ASF.replace(*asf_edit) if asf_edit else _ASF
    amc = _AMC.replace(*amc_edit) if amc_edit else _AMC
    a, m = _write(tmp_path, asf, amc)
    with pytest.raises(ValueError, match=message):
        asfamc.read_amc(m, asfamc.read_asf(a))
