"""pose3d.image: the JPEG codec and truncated-file detection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pose3d import image


def _jpeg(progressive: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    picture = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_cut_anywhere_after_its_header_is_truncated(progressive):
    data = _jpeg(progressive)
    assert not image.is_truncated(data)
    assert not image.is_truncated(data + b"camera trailer \xff\xd8 bytes")  # data after the end marker
    for keep in (len(data) // 10, len(data) // 3, len(data) - 200, len(data) - 1):
        assert image.is_truncated(data[:keep]), keep


def test_png_and_other_bytes():
    ok, buf = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    png = buf.tobytes()
    assert not image.is_truncated(png) and image.is_truncated(png[:-20])
    assert not image.is_truncated(b"not an image")  # decoding decides: undecodable, not truncated
