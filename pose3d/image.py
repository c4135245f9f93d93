"""Image operations on crops: the affine crop, and the JPEG codec with fixed parameters (OpenCV and
numpy only; no Ray, no I/O). Pixel centres sit at integer coordinates (docs/conventions.md, Pixel
convention).

May import: numpy, OpenCV, and pose3d's facts and geometry.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pose3d import geometry


def warp_crop(image: np.ndarray, affine: np.ndarray, crop_size: int) -> np.ndarray:
    """Resample ``image`` (H, W, 3) uint8 into the (crop_size, crop_size, 3) crop of ``affine`` (2, 3)
    (source px -> crop px). Black outside the image.

    Bilinear sampling aliases when shrinking more than 2x (a 2048-px 3DHP frame into a 384-px
    crop), so the box region is first shrunk by an integer factor with area averaging and the
    affine composed with that exact shrink; the result still obeys ``affine`` (pixel centres at
    integers in both images).
    """
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    factor = int(np.floor(1.0 / scale)) if scale < 0.5 else 1
    if factor >= 2:
        h, w = image.shape[:2]
        corners = np.array(
            [[-0.5, -0.5], [crop_size - 0.5, -0.5], [-0.5, crop_size - 0.5], [crop_size - 0.5] * 2]
        )
        src = geometry.apply_affine(corners, geometry.invert_affine(affine))
        # The region the crop sees, padded by one shrunk pixel, aligned to the factor, clipped.
        x0 = max(0, int(np.floor(src[:, 0].min())) - factor)
        y0 = max(0, int(np.floor(src[:, 1].min())) - factor)
        x1 = min(w, int(np.ceil(src[:, 0].max())) + 2 * factor)
        y1 = min(h, int(np.ceil(src[:, 1].max())) + 2 * factor)
        nx, ny = (x1 - x0) // factor, (y1 - y0) // factor
        if nx >= 1 and ny >= 1:
            region = image[y0 : y0 + ny * factor, x0 : x0 + nx * factor]
            small = cv2.resize(region, (nx, ny), interpolation=cv2.INTER_AREA)
            # small px u <- source px x: u = (x - x0 + 0.5) / factor - 0.5
            to_small = np.array(
                [[1 / factor, 0, (0.5 - x0) / factor - 0.5], [0, 1 / factor, (0.5 - y0) / factor - 0.5]]
            )
            image, affine = small, geometry.compose_affine(affine, geometry.invert_affine(to_small))
        # else: the crop lies entirely outside the image; the plain warp gives the black crop.
    return cv2.warpAffine(
        image,
        affine,
        (crop_size, crop_size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 BGR -> baseline JPEG bytes; fixed parameters, so the bytes are reproducible."""
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        int(quality),
        cv2.IMWRITE_JPEG_OPTIMIZE,
        0,
        cv2.IMWRITE_JPEG_PROGRESSIVE,
        0,
    ]
    ok, buf = cv2.imencode(".jpg", image, params)
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return buf.tobytes()


def decode_images(jpegs: Sequence[bytes], rgb: bool = True) -> np.ndarray:
    """JPEG crops -> (B, H, W, 3) uint8, RGB by default (BGR with ``rgb=False``).

    Raises ValueError when a crop cannot be decoded or the crops differ in size.
    """
    images = []
    for i, data in enumerate(jpegs):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"crop {i} is not a decodable JPEG")
        images.append(image[..., ::-1] if rgb else image)
    if len({im.shape for im in images}) > 1:
        raise ValueError(f"crops differ in size: {sorted({im.shape for im in images})}")
    return np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)


_JPEG_START, _JPEG_SOS, _JPEG_EOI = b"\xff\xd8\xff", b"\xff\xda", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def is_truncated(data: bytes) -> bool:
    """True for a JPEG or PNG file cut short: a JPEG whose last scan (SOS marker) is not followed
    by the end-of-image marker, or that has no scan at all; a PNG without its IEND chunk at the end.
    OpenCV decodes such files without an error, greying what is missing.

    Why the JPEG rule holds: inside entropy-coded data every 0xFF byte is followed by 0x00 or a
    restart marker, so 0xFFD9 after the last 0xFFDA can only be the real end of the image (an
    embedded thumbnail's end marker comes before the main scan). Bytes after the end marker
    (camera trailers) are allowed. Other formats: False (decoding decides).
    """
    if data.startswith(_JPEG_START):
        # Searched from the ends: the last end marker sits at the end of a complete file, the first
        # scan after the headers, so a complete file is not read through.
        last_end = data.rfind(_JPEG_EOI)
        return last_end < 0 or data.find(_JPEG_SOS) < 0 or data.find(_JPEG_SOS, last_end) >= 0
    if data.startswith(_PNG_START):
        return not data.endswith(_PNG_END)
    return False
