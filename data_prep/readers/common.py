"""Helpers shared by the dataset readers: images, person boxes, joint mapping with derived joints,
quarantine reasons, options and task ids.

Conventions every reader follows (``data_prep.records``):

- pixels are 0-based with pixel centres at integer coordinates (``pose3d.geometry``); sources in
  1-based MATLAB pixels (MPII) are shifted by -1 on reading;
- 3D joints are camera-frame millimetres;
- a joint the source lacks but the 16 need (the thorax of Human3.6M and 3DHP) is derived in 3D and
  its 2D label is the projection of that 3D point with the camera (docs/conventions.md, Joint mappings);
- a bad record becomes ``Quarantined`` with a reason ``"<category>: <details>"`` (the writer counts
  by category, ``data_prep.crop.reason_category``); ``read_task`` never raises for one record.
  Non-finite label values are passed through: the writer's validation quarantines them
  (``data_prep.crop.validate_sample``, category "non-finite label"), so that check lives in one place.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data_prep.records import Camera
from pose3d import geometry, skeleton
from pose3d.image import is_truncated

#: MPII's scale unit (also mmpose's): ``scale * 200`` is the side of the person box in px.
SCALE_UNIT_PX = 200.0
#: Box side / larger extent of the joints when a box is made from joints: the margin mmpose's own
#: Human3.6M and 3DHP boxes have (checked on the fixtures: scale*200 = 1.2 x the joints' extent).
JOINT_BOX_MARGIN = 1.2

# Quarantine categories (the text before ": "). "wrong joint count" is the writer's own category
# too (data_prep.crop), so the counts merge. An image is missing, truncated (cut short: OpenCV would
# decode it and grey the rest) or undecodable, each counted apart.
MISSING_IMAGE = "missing image"
TRUNCATED_IMAGE = "truncated image"
UNDECODABLE_IMAGE = "undecodable image"
WRONG_JOINT_COUNT = "wrong joint count"
TOO_FEW_JOINTS = "too few annotated joints"
NO_CAMERA = "no camera"
BAD_VIDEO = "bad video"
BAD_ANNOTATION = "bad annotation"
NO_IMAGE_NAME = "no image name"


class UnsafePickleError(ValueError):
    """A pickle that names a class or function outside the plain values camera files hold."""


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1.x and 2.x pickles
#: What a camera ``.pkl`` may hold (mmpose's and 3DHP's dicts of lists and numpy arrays). Anything
#: else could run code when unpickled, so it is refused by name.
_PICKLE_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray")]
    + [("builtins", n) for n in ("int", "float", "complex", "bool")]
    + [("collections", "OrderedDict")]
    + [(m, n) for m in _NUMPY_CORE for n in ("_reconstruct", "scalar")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("numpy", n) for n in ("float64", "float32", "int64", "int32", "bool_", "str_")]
)  # fmt: skip


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise UnsafePickleError(
                f"{self._path}: refused: the pickle names {module}.{name}, which a camera file never holds "
                "(unpickling it could run code); convert the cameras to JSON or rebuild the .pkl from "
                "plain dicts, lists and numpy arrays"
            )
        return super().find_class(module, name)


def load_plain_pickle(path: str | Path) -> Any:
    """Unpickle a data file that holds only builtins and numpy arrays (camera ``.pkl`` files); any
    other class or function is refused with ``UnsafePickleError`` naming it, and nothing runs."""
    path = Path(path)
    with open(path, "rb") as f:
        return _PlainUnpickler(f, path).load()


@functools.cache
def quiet_opencv() -> None:
    """Hold OpenCV's own log at errors, once per process: a dataset with thousands of missing or
    broken files would otherwise print a warning per file, while each is already counted and named
    in the quarantine report."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # an OpenCV build without the logging module
        pass


def read_image(path: str | Path, source: str) -> tuple[np.ndarray | None, str | None]:
    """(the image as (H, W, 3) uint8 BGR, None), or (None, the quarantine reason naming ``source``):
    "missing image", "truncated image" (``pose3d.image.is_truncated``) or "undecodable image".
    The file is read here and decoded from memory, so OpenCV never meets a missing path."""
    quiet_opencv()
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None, f"{MISSING_IMAGE}: {source}"
    except OSError as err:
        return None, f"{UNDECODABLE_IMAGE}: {source}: {err.strerror or err}"
    if is_truncated(data):
        return None, f"{TRUNCATED_IMAGE}: {source} ({len(data)} bytes, no end-of-image marker)"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        return None, f"{UNDECODABLE_IMAGE}: {source} ({len(data)} bytes)"
    return image, None


def box_from_center_scale(center: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MPII/mmpose centre and scale -> (centre (..., 2) px, box side (...) px = scale * 200)."""
    return np.asarray(center, np.float64), np.asarray(scale, np.float64) * SCALE_UNIT_PX


def box_from_joints(
    joints_2d: np.ndarray, visible: np.ndarray, margin: float = JOINT_BOX_MARGIN
) -> tuple[np.ndarray, np.ndarray]:
    """The square person box around the visible, finite joints.

    joints_2d (..., J, 2) px; visible (..., J) bool. Returns centre (..., 2) px, the middle of the
    joints' bounding rectangle, and side (...) px = ``margin`` x its larger extent. A pose without
    a usable joint gets a NaN box (the writer quarantines it as a bad box).
    """
    joints_2d = np.asarray(joints_2d, np.float64)
    use = np.asarray(visible, bool) & np.all(np.isfinite(joints_2d), axis=-1)
    lo = np.where(use[..., None], joints_2d, np.inf).min(axis=-2)
    hi = np.where(use[..., None], joints_2d, -np.inf).max(axis=-2)
    empty = ~use.any(axis=-1)
    lo[empty], hi[empty] = np.nan, np.nan
    return (lo + hi) / 2, margin * np.max(hi - lo, axis=-1)


def map_joints(
    mapping: skeleton.JointMapping,
    joints_2d: np.ndarray,
    visible: np.ndarray,
    joints_3d: np.ndarray,
    camera: Camera,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map a source skeleton with 2D and 3D labels into the 16 joints.

    joints_2d (N, J, 2) px; visible (N, J) bool; joints_3d (N, J, 3) camera mm; one ``camera`` for
    all N. Directly mapped joints keep the source's 2D labels; each derived joint's 2D is the
    projection of its derived 3D point (with the camera's distortion). Returns joints_2d (N, 16, 2),
    visible (N, 16), joints_3d (N, 16, 3).
    """
    j3d, vis = mapping.apply(joints_3d, visible)
    j2d, _ = mapping.apply(joints_2d, visible)
    derived = sorted(mapping.derived)
    if derived and len(j3d):
        points = j3d[:, derived, :].reshape(-1, 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            projected = geometry.project(points, camera.f, camera.c, camera.k, camera.p)
        j2d[:, derived, :] = projected.reshape(len(j3d), len(derived), 2)
    return j2d, vis, j3d


def camera_to_payload(camera: Camera | None) -> dict[str, list[float]] | None:
    """A camera as plain lists (task payloads stay JSON-like)."""
    if camera is None:
        return None
    return {
        name: np.asarray(getattr(camera, name), np.float64).ravel().tolist() for name in ("f", "c", "k", "p")
    }


def camera_from_payload(payload: dict[str, Sequence[float]] | None) -> Camera | None:
    if payload is None:
        return None
    return Camera(*(np.asarray(payload[name], np.float64) for name in ("f", "c", "k", "p")))


def safe_id(name: str) -> str:
    """A task id safe as a file name: anything but letters, digits, '.', '_' and '-' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def list_option(value: Any) -> list[str] | None:
    """An option that lists names: None, a comma-separated string or an iterable of names."""
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def bool_option(value: Any) -> bool:
    """A yes/no option given as a bool or as text from a command line ("true", "0", ...)."""
    if isinstance(value, str):
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if value.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a yes/no value: {value!r}")
    return bool(value)


def resolve(raw_root: str | Path, path: str | Path) -> Path:
    """``path`` as given when absolute, else relative to the raw root."""
    path = Path(path)
    return path if path.is_absolute() else Path(raw_root) / path


def image_root(raw_root: str | Path, images: str | None) -> Path:
    """The folder image names are relative to: ``images`` when given (relative to the raw root),
    else ``<root>/images`` when it exists, else the raw root."""
    if images:
        return resolve(raw_root, images)
    return Path(raw_root) / "images" if (Path(raw_root) / "images").is_dir() else Path(raw_root)


def first_existing(raw_root: str | Path, candidates: Iterable[str]) -> Path | None:
    """The first of ``candidates`` (relative to the raw root) that exists, or None."""
    for candidate in candidates:
        path = Path(raw_root) / candidate
        if path.exists():
            return path
    return None


def file_stamp(*paths: str | Path | None) -> tuple[tuple[int, int] | None, ...]:
    """(mtime ns, size) of each path (None when absent): a cache key part, so that a file
    rewritten in place is read again."""
    stamps = []
    for path in paths:
        try:
            st = os.stat(path) if path is not None else None
        except OSError:
            st = None
        stamps.append(None if st is None else (st.st_mtime_ns, st.st_size))
    return tuple(stamps)


def cached_by_file(maxsize: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Memoize ``fn(path, *args)`` per process on the path, its stamp and the other arguments:
    every task a worker reads from one big annotation file parses it once."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.lru_cache(maxsize=maxsize)
        def cached(path: str, stamp: tuple, *args: Any) -> Any:
            return fn(path, *args)

        @functools.wraps(fn)
        def wrapper(path: str | Path, *args: Any) -> Any:
            return cached(str(path), file_stamp(path), *args)

        return wrapper

    return decorate


def find_annotation(dataset: str, raw_root: str | Path, given: str | None, candidates: Sequence[str]) -> Path:
    """The annotation npz of a raw folder: ``given`` (relative to the root, or absolute) when set,
    else the first of ``candidates`` that exists, else the folder's only ``*.npz``. Raises
    FileNotFoundError naming the dataset, the folder and what was looked for."""
    if given is not None:
        path = resolve(raw_root, given)
        if not path.exists():
            raise FileNotFoundError(f"{dataset}: annotation {path} not found")
        return path
    path = first_existing(raw_root, candidates)
    if path is not None:
        return path
    found = sorted(Path(raw_root).glob("*.npz"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"{dataset}: no annotation npz in {raw_root} ({', '.join(candidates)} or a single *.npz; "
        f"found {len(found)}); give npz="
    )


@cached_by_file(maxsize=2)
def load_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an npz (no pickles), parsed once per process and file version. A file of
    another format, or one holding pickled objects, is a ValueError naming it (not numpy's text)."""
    found = sniff_format(path)
    if found != "npz":
        raise ValueError(
            f"{path} is not an npz (numpy's zip of arrays): {describe_start(path)}"
            + (f", a {found} file" if found not in ("unknown", "empty") else "")
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as err:  # object arrays: loading them would run pickle
        raise ValueError(f"{path}: an npz of pickled object arrays, never loaded here ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable npz ({type(err).__name__}: {err})") from None


#: The 8-byte signature that starts an HDF5 file's superblock (also MATLAB v7.3 .mat files).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Where an HDF5 superblock may sit: at 0, or after a user block of 512 x 2^k bytes (MATLAB v7.3
#: puts its text header in a 512-byte user block).
_HDF5_OFFSETS = (0, 512, 1024, 2048)


def sniff_format(path: str | Path) -> str:
    """What a file holds, judged by its first bytes, never by its suffix: "hdf5", "mat73" (a MATLAB
    v7.3 .mat: HDF5 behind a MATLAB text header), "mat" (MATLAB 5 to 7.2), "json" (first non-blank
    character ``[`` or ``{``), "npz" (a zip), "empty" or "unknown"."""
    with open(path, "rb") as f:
        head = f.read(_HDF5_OFFSETS[-1] + len(HDF5_SIGNATURE))
    if not head:
        return "empty"
    hdf5 = any(head[at : at + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE for at in _HDF5_OFFSETS)
    if head.startswith(b"MATLAB"):
        return "mat73" if hdf5 else "mat"
    if hdf5:
        return "hdf5"
    if head.startswith(b"PK\x03\x04"):
        return "npz"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{"):
        return "json"
    return "unknown"


def describe_start(path: str | Path, n: int = 24) -> str:
    """The first bytes of a file, for an error message that says what was found instead."""
    with open(path, "rb") as f:
        head = f.read(n)
    return f"it starts with {head!r}" if head else "it is empty"


def relative_to_root(path: str | Path, raw_root: str | Path) -> str:
    """``path`` relative to the raw root when it lies under it (shards record it so), else as is."""
    try:
        return Path(path).resolve().relative_to(Path(raw_root).resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def read_video_frames(
    path: str | Path, frames: np.ndarray, source: str
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """(frame, (H, W, 3) uint8 BGR image, None) for each of the increasing 0-based ``frames`` of a
    video, decoded sequentially with OpenCV; (frame, None, "bad video: ...") for frames it cannot
    deliver (an unopenable video, or one that ends early). OpenCV's own log is held at errors."""
    import cv2

    quiet_opencv()
    capture = cv2.VideoCapture(str(path)) if Path(path).is_file() else None
    try:
        if capture is None or not capture.isOpened():
            why = "missing" if capture is None else "cannot open"
            for frame in frames:
                yield int(frame), None, f"{BAD_VIDEO}: {why} {source}"
            return
        position = 0  # the index of the next frame the capture delivers
        ended = False
        for frame in frames:
            ok = not ended
            while ok and position < frame:
                ok = capture.grab()
                position += 1
            image = None
            if ok:
                ok, image = capture.read()
                position += 1
            if not ok or image is None:
                ended = True
                yield (
                    int(frame),
                    None,
                    f"{BAD_VIDEO}: {source} ends before frame {frame}, its poses go on",
                )
                continue
            yield int(frame), image, None
    finally:
        if capture is not None:
            capture.release()
