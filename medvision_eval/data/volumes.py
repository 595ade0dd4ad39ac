"""NIfTI volumes in RAS+ voxel order, 2D slices with the paper's convention, and a volume cache
bounded in bytes that can decode the next volume on a worker thread.

Slicing (v1 ``_load_nifti_2d``): axis 0 -> ``vol[i, :, :]``, 1 -> ``vol[:, i, :]``, 2 ->
``vol[:, :, i]``, no transpose, so the rows of the 2D image are the first remaining voxel axis
and the columns the second. The pixel size is ``(zooms[a], zooms[b])`` for the remaining axes
``a < b``: ``zooms[a]`` is the row (height) spacing and ``zooms[b]`` the column (width) spacing.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import struct
import threading
import zlib
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import SampleDataError

REMAINING_AXES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}


@dataclass(frozen=True)
class VolumeHeader:
    """What the header says about a volume once reoriented to RAS+ (no voxel data read)."""

    path: str
    shape: tuple[int, int, int]  # RAS+ voxel axes
    zooms: tuple[float, float, float]  # mm, RAS+ order
    orientation: tuple[str, str, str]  # axis codes on disk, e.g. ('L', 'A', 'S')
    affine: np.ndarray  # RAS+ affine

    @property
    def is_ras(self) -> bool:
        return self.orientation == ("R", "A", "S")

    def slice_shape(self, axis: int) -> tuple[int, int]:
        """(height, width) of a slice along ``axis``: (rows, columns)."""
        a, b = REMAINING_AXES[axis]
        return self.shape[a], self.shape[b]

    def pixel_spacing_hw(self, axis: int) -> tuple[float, float]:
        a, b = REMAINING_AXES[axis]
        return self.zooms[a], self.zooms[b]


def _spatial_shape(img: nib.spatialimages.SpatialImage, path: Path) -> tuple[int, ...]:
    shape = tuple(int(s) for s in img.shape)
    if 0 in shape:
        raise SampleDataError(f"{path}: volume of shape {shape} has no voxels (an axis of size 0); fix the NIfTI header")
    if len(shape) == 3:
        return shape
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        return shape[:3]
    if len(shape) > 3:
        raise SampleDataError(f"{path}: {len(shape)}D volume of shape {shape} is not supported; "
                              "MedVision slices 3D volumes (split the time/channel axis into 3D files)")
    raise SampleDataError(f"{path}: {len(shape)}D image of shape {shape}; expected a 3D volume")


def _open(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise SampleDataError(f"{path}: file not found")
    try:
        return nib.load(str(path))
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise SampleDataError(f"{path}: cannot read the NIfTI header (truncated or corrupt file: {exc})") from exc
    except Exception as exc:  # nibabel raises several ImageFileError subclasses
        raise SampleDataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc


def _ras_transform(affine: np.ndarray) -> np.ndarray:
    return nib.orientations.io_orientation(affine)


def _raw_pixdim(img: nib.spatialimages.SpatialImage, path: Path) -> np.ndarray | None:
    """``pixdim[1:4]`` exactly as stored: nibabel's loader silently turns 0 into 1 and negative
    spacings into their absolute value, so the header is re-read without its checks."""
    header_class = type(img.header)
    if not hasattr(header_class, "from_fileobj") or "pixdim" not in getattr(img.header, "keys", lambda: [])():
        return None
    try:
        with nib.openers.ImageOpener(str(path)) as fh:
            raw = header_class.from_fileobj(fh, check=False)
        return np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    except Exception:  # the checked header was readable; the raw one adds nothing then
        return None


def check_geometry(img: nib.spatialimages.SpatialImage, path: Path, pixdim: np.ndarray | None = None) -> None:
    """Pixel spacing must be finite and positive and the affine usable: a NaN, zero or negative
    spacing would put "nan mm" (or a silently "fixed" size) into prompts and targets. ``pixdim``:
    the header's ``pixdim[1:4]`` as stored, when the caller has read it already."""
    if pixdim is None:
        pixdim = _raw_pixdim(img, path)
    if pixdim is None:
        pixdim = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    for i, z in enumerate(pixdim, start=1):
        what = "NaN" if np.isnan(z) else ("infinite" if not np.isfinite(z) else ("zero" if z == 0 else "negative" if z < 0 else ""))
        if what:
            raise SampleDataError(f"{path}: header field pixdim[{i}] (voxel spacing, mm) is {what} ({float(z)}); "
                                  "spacing must be finite and positive: fix the NIfTI header")
    affine = np.asarray(img.affine, dtype=np.float64)
    linear = affine[:3, :3]
    if not np.isfinite(affine).all():
        raise SampleDataError(f"{path}: header affine (sform/qform) has non-finite entries; fix the NIfTI header")
    if not linear.any():
        raise SampleDataError(f"{path}: header affine (sform/qform) is all zero, so the voxel orientation and size are "
                              "unknown; fix the NIfTI header (set a valid sform or qform)")
    if abs(float(np.linalg.det(linear))) < 1e-12:
        raise SampleDataError(f"{path}: header affine (sform/qform) is singular (determinant 0); fix the NIfTI header")


def read_header(path: str | Path) -> VolumeHeader:
    """Header facts in RAS+ order. Raises SampleDataError naming the file on any problem.

    A single-file NIfTI-1 (``.nii`` / ``.nii.gz``) is read with one ``open`` of its first 352
    (inflated) bytes: the common header (3D, sform, plain voxel type) is read from them directly
    (:func:`_plain_nifti1`), any other is handed to nibabel's own header and image classes (what
    ``nib.load`` builds from the same bytes, without sniffing the file first and re-reading it
    for the unchecked ``pixdim``). Other formats, and any file these cannot read, go through
    ``nib.load``, which also words the error."""
    path = Path(path)
    try:
        fast = _single_open_header(path)
    except Exception:  # the general path below reads it (or names what is wrong with it)
        fast = None
    if fast is not None:
        return fast
    return _header_of(_open(path), path)


_NIFTI1_HEAD = 352  # the 348-byte header and the 4-byte extension flag


def _leading_bytes(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of a file, inflated when it is gzip (fewer if it is shorter)."""
    with open(path, "rb") as fh:
        if not path.name.endswith(".gz"):
            return fh.read(size)
        inflater = zlib.decompressobj(wbits=31)
        out = b""
        while len(out) < size:
            chunk = fh.read(4096)
            if not chunk:
                break
            out += inflater.decompress(chunk, size - len(out))
            while inflater.unconsumed_tail and len(out) < size:
                out += inflater.decompress(inflater.unconsumed_tail, size - len(out))
            if inflater.eof:
                break
        return out


def _single_open_header(path: Path) -> VolumeHeader | None:
    """:func:`read_header` of a plain single-file NIfTI-1 from one read, else None."""
    if not path.name.endswith((".nii", ".nii.gz")):
        return None
    raw = _leading_bytes(path, _NIFTI1_HEAD)
    if len(raw) < _NIFTI1_HEAD or raw[344:348] != b"n+1\0" or raw[348:349] != b"\0":
        return None  # short, not NIfTI-1 single file, or with extensions: nib.load reads it
    if int.from_bytes(raw[:4], "little") != 348 and int.from_bytes(raw[:4], "big") != 348:
        return None
    plain = _struct_nifti1(raw, path)
    if plain is None:
        plain = _plain_nifti1(raw, path)
    if plain is not None:
        return plain
    holder = nib.fileholders.FileHolder(filename=str(path), fileobj=io.BytesIO(raw))
    img = nib.Nifti1Image.from_file_map({"image": holder})
    raw_header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    pixdim = np.asarray(raw_header["pixdim"][1:4], dtype=np.float64)
    return _header_of(img, path, pixdim)


_HEADER_LE = np.dtype(nib.nifti1.header_dtype).newbyteorder("<")
_HEADER_BE = _HEADER_LE.newbyteorder(">")
# scalar voxel types nibabel reads without question: uint8, int16, int32, float32, float64, int8, uint16, uint32
_PLAIN_DATATYPES = frozenset((2, 4, 8, 16, 64, 256, 512, 768))


class _Geometry:
    """What :func:`_spatial_shape` and :func:`check_geometry` read of an image."""

    __slots__ = ("shape", "affine")

    def __init__(self, shape: tuple[int, ...], affine: np.ndarray) -> None:
        self.shape, self.affine = shape, affine


def _plain_nifti1(raw: bytes, path: Path) -> VolumeHeader | None:
    """The header of the common NIfTI-1 file read straight from its 348 bytes: a 3D volume (or
    trailing axes of size 1) of a plain scalar type, with a valid sform and positive spacing.
    nibabel's header checks change nothing in such a header, and what ``nib.load`` reports is
    exactly this: shape ``dim[1:dim[0]+1]``, zooms ``pixdim[1:4]``, affine the sform rows
    (float32 -> float64). Anything else returns None (nibabel's classes read it)."""
    little = int.from_bytes(raw[:4], "little") == 348
    hdr = np.frombuffer(raw, dtype=_HEADER_LE if little else _HEADER_BE, count=1)[0]
    ndim = int(hdr["dim"][0])
    if not 3 <= ndim <= 7 or int(hdr["sform_code"]) not in (1, 2, 3, 4) or int(hdr["datatype"]) not in _PLAIN_DATATYPES:
        return None
    if int(hdr["vox_offset"]) < 352 or int(hdr["bitpix"]) != 8 * np.dtype(nib.nifti1.data_type_codes.dtype[int(hdr["datatype"])]).itemsize:
        return None
    shape = tuple(int(d) for d in hdr["dim"][1:ndim + 1])
    pixdim = hdr["pixdim"]
    if min(shape) <= 0 or shape[:3] in ((-1, 1, 1), (27307, 1, 6)) or not all(0 < float(z) < np.inf for z in pixdim[1:4]):
        return None  # nibabel's special cases and checks decide (and word the error)
    slope = float(hdr["scl_slope"])
    if slope != 0 and np.isfinite(slope) and not np.isfinite(float(hdr["scl_inter"])):
        return None  # nibabel refuses a valid slope with a NaN/inf intercept (HeaderDataError naming the file)
    affine = np.eye(4)
    affine[0, :] = hdr["srow_x"]
    affine[1, :] = hdr["srow_y"]
    affine[2, :] = hdr["srow_z"]
    geometry = _Geometry(shape, affine)
    shape = _spatial_shape(geometry, path)
    check_geometry(geometry, path, np.asarray(pixdim[1:4], dtype=np.float64))  # type: ignore[arg-type]
    zooms = tuple(float(z) for z in pixdim[1:4])
    return _ras_header(path, shape, zooms, affine)


_STRUCT_LE = struct.Struct("<i36x8h14x2h2x8f3f132x2h24x12f")
_STRUCT_BE = struct.Struct(">i36x8h14x2h2x8f3f132x2h24x12f")
# bits per voxel of each plain voxel type
_PLAIN_BITS = {code: 8 * np.dtype(nib.nifti1.data_type_codes.dtype[code]).itemsize for code in _PLAIN_DATATYPES}


def _struct_nifti1(raw: bytes, path: Path) -> VolumeHeader | None:
    """:func:`_plain_nifti1` of the commonest header (3D, a plain voxel type, an sform whose rows
    are finite and clearly not singular, positive finite spacing), read with one ``struct`` unpack
    and plain float arithmetic instead of a NumPy record: the same shape, zooms and affine, so the
    same :class:`VolumeHeader`. Anything else (including every header :func:`_plain_nifti1` refuses
    or words an error about) returns None, and :func:`_plain_nifti1` reads it."""
    little = int.from_bytes(raw[:4], "little") == 348
    values = (_STRUCT_LE if little else _STRUCT_BE).unpack_from(raw)
    if values[0] != 348:
        return None
    dim, datatype, bitpix = values[1:9], values[9], values[10]
    pixdim, vox_offset, slope, intercept = values[11:19], values[19], values[20], values[21]
    sform_code, rows = values[23], values[24:36]
    if dim[0] != 3 or sform_code not in (1, 2, 3, 4) or _PLAIN_BITS.get(datatype) != bitpix:
        return None
    if not 352 <= vox_offset < 2.0 ** 62:
        return None
    shape = (dim[1], dim[2], dim[3])
    if min(shape) <= 0 or shape in ((27307, 1, 6),):
        return None
    zooms = pixdim[1:4]
    if not all(0 < z < math.inf for z in zooms):
        return None
    if slope != 0 and math.isfinite(slope) and not math.isfinite(intercept):
        return None
    if not all(math.isfinite(v) for v in rows):
        return None
    (a, b, c, _), (d, e, f, _), (g, h, i, _) = rows[0:4], rows[4:8], rows[8:12]
    if abs(a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)) < 1e-6:
        return None  # all zero, singular or nearly: _plain_nifti1 words the error (or accepts it)
    affine = np.array((rows[0:4], rows[4:8], rows[8:12], (0.0, 0.0, 0.0, 1.0)), dtype=np.float64)
    return _ras_header(path, shape, zooms, affine)


def _header_of(img: nib.spatialimages.SpatialImage, path: Path, pixdim: np.ndarray | None = None) -> VolumeHeader:
    shape = _spatial_shape(img, path)
    check_geometry(img, path, pixdim)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return _ras_header(path, shape, zooms, np.asarray(img.affine, dtype=float))


def _ras_header(path: Path, shape: tuple[int, ...], zooms: tuple[float, ...], affine: np.ndarray) -> VolumeHeader:
    try:
        order, inverse, codes = _orientation(affine.tobytes(), shape)
    except Exception as exc:  # e.g. a huge sform entry: nibabel cannot find the axes (was a traceback)
        raise SampleDataError(f"{path}: header affine (sform/qform) gives no voxel orientation "
                              f"({type(exc).__name__}: {exc}); fix the NIfTI header") from exc
    ras_shape = tuple(shape[order.index(i)] for i in range(3))
    ras_zooms = tuple(zooms[order.index(i)] for i in range(3))
    ras_affine = affine @ inverse
    return VolumeHeader(str(path), ras_shape, ras_zooms, codes, ras_affine)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=256)
def _orientation(affine_bytes: bytes, shape: tuple[int, ...]) -> tuple[list[int], np.ndarray, tuple[str, ...]]:
    """(voxel axis order, ``inv_ornt_aff``, axis codes) of an affine: volumes of one scanner share
    it, so each distinct (affine, shape) is worked out once. The arrays returned are read-only."""
    affine = np.frombuffer(affine_bytes, dtype=float).reshape(4, 4)
    ornt = _ras_transform(affine)
    inverse = nib.orientations.inv_ornt_aff(ornt, shape)
    inverse.flags.writeable = False
    return [int(ax) for ax in ornt[:, 0]], inverse, tuple(nib.orientations.aff2axcodes(affine))


def decode_ras(path: str | Path) -> tuple[np.ndarray, VolumeHeader]:
    """Decode a volume in RAS+ voxel order, in the narrowest dtype that holds v1's float32 values
    exactly: 8/16-bit integers and float32 stay as stored (float32 holds them exactly), anything
    else takes v1's route (float64, then float32). ``astype(float32)`` of the result, or of any
    slice of it, is v1's ``get_fdata().astype('float32')``; a 512x512x150 int16 CT is 79 MB
    here instead of 157 MB.

    The array keeps the memory layout the file has (NIfTI stores the first voxel axis fastest,
    so it is Fortran-ordered, and reorienting is a view): values and indexing are v1's, only the
    strides differ. A C-order copy would cost a full transposing pass over the volume (1.2 s of a
    2.2 s decode for that CT) and make axial slices, the common case, the most scattered ones; in
    file order an axial slice is one contiguous block. The array is read-only: slices taken from
    it are views into the volume cache.
    """
    path = Path(path)
    img = _open(path)
    header = _header_of(img, path)  # one header parse serves the checks and the voxels
    try:
        data = _inflated_voxels(img, path)
        if data is None:
            data = np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as exc:
        raise SampleDataError(f"{path}: cannot decode voxel data (truncated or corrupt gzip: {exc})") from exc
    if data.dtype.kind not in "biufc":  # RGB24/RGBA32 voxels are records: no grey value to slice
        raise SampleDataError(f"{path}: voxel data type {img.get_data_dtype()} (e.g. RGB) is not a scalar type; "
                              "MedVision slices greyscale volumes (convert the file to one scalar channel)")
    if data.ndim > 3:
        data = data.reshape(data.shape[:3])
    # ``np.asanyarray(img.dataobj)`` already applies scl_slope/scl_inter (as ``get_fdata`` does):
    # never scale again, or an int16 CT with inter -1024 reads 1024 HU too low.
    if not exact_in_float32(data.dtype):
        data = np.asarray(np.asarray(data, dtype=np.float64), dtype=np.float32)
    data = nib.orientations.apply_orientation(data, _ras_transform(img.affine))  # a view: no copy
    data.flags.writeable = False
    return data, header


_INFLATE_INPUT = 1 << 20  # compressed bytes read at a time
_INFLATE_OUTPUT = 4 << 20  # most decompressed bytes produced per step


def _inflated_voxels(img: nib.spatialimages.SpatialImage, path: Path) -> np.ndarray | None:
    """The voxels of an unscaled ``.nii.gz``, inflated straight into the array's buffer; ``None``
    when this path does not apply (not gzip, scaled data, not a plain array proxy), and nibabel
    reads it instead.

    The result is exactly ``np.asanyarray(img.dataobj)`` (nibabel returns the raw array when
    slope is 1 and intercept 0): same bytes, dtype (byte order included), shape and layout. What
    differs is the route: nibabel reads through ``GzipFile.readinto``, which builds the whole
    volume as one ``bytes`` object (from a list of chunks) before copying it into the array, so a
    79 MB CT briefly needs two to three times that, and is a third slower.
    """
    proxy = img.dataobj
    if not (path.name.endswith(".nii.gz") and isinstance(img, (nib.Nifti1Image, nib.Nifti2Image))
            and type(proxy) is nib.arrayproxy.ArrayProxy):
        return None  # single-file gzip NIfTI only
    if (float(proxy.slope), float(proxy.inter)) != (1.0, 0.0):
        return None
    dtype = np.dtype(proxy.dtype)
    shape = tuple(int(n) for n in proxy.shape)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size == 0:
        return None
    buffer = bytearray(size)
    view = memoryview(buffer)
    skip, filled = int(proxy.offset), 0  # header bytes to pass over, voxel bytes written
    inflater = zlib.decompressobj(wbits=31)  # gzip framing
    with open(path, "rb") as fh:
        pending = b""
        while filled < size:
            if not pending:
                if inflater.eof:  # a multi-member gzip file: the next member starts here
                    pending, inflater = inflater.unused_data, zlib.decompressobj(wbits=31)
                if not pending:
                    pending = fh.read(_INFLATE_INPUT)
                if not pending:
                    raise EOFError(f"the compressed stream ends after {filled} of {size} voxel bytes")
            want = skip if skip else size - filled
            out = inflater.decompress(pending, min(want, _INFLATE_OUTPUT))
            # at a member's end everything after it is in unused_data (taken above); with an output
            # limit CPython may leave a copy of it in unconsumed_tail too, which must not be fed back
            pending = b"" if inflater.eof else inflater.unconsumed_tail
            if skip:
                skip -= len(out)
                continue
            view[filled:filled + len(out)] = out
            filled += len(out)
    return np.ndarray(shape, dtype, buffer=buffer, order=proxy.order)


def exact_in_float32(dtype: np.dtype) -> bool:
    """float32 holds every value of ``dtype`` exactly (8/16-bit integers, float32 itself)."""
    return dtype == np.float32 or (dtype.kind in "iub" and dtype.itemsize <= 2)


def load_ras(path: str | Path) -> tuple[np.ndarray, VolumeHeader]:
    """Decode a volume as float32 in RAS+ voxel order (as v1: ``get_fdata().astype('float32')``),
    read-only, in the file's memory layout (see :func:`decode_ras`)."""
    data, header = decode_ras(path)
    if data.dtype != np.float32:
        data = data.astype(np.float32)  # keeps the layout
        data.flags.writeable = False
    return data, header


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The paper's 2D slice: no transpose (rows = first remaining axis)."""
    if axis not in (0, 1, 2):
        raise ValueError("slice axis must be 0, 1 or 2")
    if not 0 <= index < volume.shape[axis]:
        raise IndexError(f"slice {index} outside axis {axis} of size {volume.shape[axis]}")
    if axis == 0:
        return volume[index, :, :]
    if axis == 1:
        return volume[:, index, :]
    return volume[:, :, index]


DEFAULT_CACHE_BYTES = 512 << 20  # 512 MiB of decoded voxels (six 512x512x150 int16 CT volumes)
CACHE_BYTES_ENV = "MEDVISION_VOLUME_CACHE_MB"


def cache_bytes_from_env(default: int = DEFAULT_CACHE_BYTES) -> int:
    """``MEDVISION_VOLUME_CACHE_MB`` (MiB) if set to a number, else ``default``."""
    raw = os.environ.get(CACHE_BYTES_ENV, "").strip()
    if not raw:
        return default
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"{CACHE_BYTES_ENV}={raw!r}: expected a number of MiB, e.g. 1024") from None
    if mb < 0:
        raise ValueError(f"{CACHE_BYTES_ENV}={raw!r}: must not be negative")
    return int(mb * (1 << 20))


class VolumeCache:
    """LRU of decoded volumes (:func:`decode_ras`) bounded in bytes; thread-safe; each path decoded
    once while cached.

    ``max_bytes`` bounds the decoded voxels held (the volume in use is always kept, even when it
    alone is larger). ``prefetch(path)`` decodes a volume on a worker thread so that the decode
    overlaps the work on the current one; ``get`` then waits for it instead of decoding again.
    ``drop(path)`` forgets a volume its caller is done with. ``decodes`` counts actual decodes
    (one per volume per run when samples come grouped). A decode that fails is remembered until
    the volume is dropped: every later ``get`` raises the same error without reading the file
    again (a broken volume with hundreds of samples is read once, not once per sample).
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = cache_bytes_from_env() if max_bytes is None else max(0, int(max_bytes))
        self._items: OrderedDict[str, tuple[np.ndarray, VolumeHeader]] = OrderedDict()
        self._pending: dict[str, Future] = {}
        self._failed: dict[str, SampleDataError] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.decodes = 0
        self.nbytes = 0  # decoded bytes held now
        self.peak_bytes = 0

    def _decode(self, key: str) -> tuple[np.ndarray, VolumeHeader]:
        value = decode_ras(key)
        with self._lock:
            self.decodes += 1
        return value

    def _store(self, key: str, value: tuple[np.ndarray, VolumeHeader]) -> None:
        """Insert as most recent; evict least recent until within the bound (keep ``key``)."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old[0].nbytes
            self._items[key] = value
            self.nbytes += value[0].nbytes
            while self.nbytes > self.max_bytes and len(self._items) > 1:
                oldest = next(iter(self._items))
                if oldest == key:
                    break
                self.nbytes -= self._items.pop(oldest)[0].nbytes
            self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def get(self, path: str | Path) -> tuple[np.ndarray, VolumeHeader]:
        key = str(path)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            failed = self._failed.get(key)
            pending = self._pending.pop(key, None)
        if failed is not None:
            raise SampleDataError(str(failed))
        try:
            if pending is not None:
                value = pending.result()  # a failed decode raises its SampleDataError here, in the caller
            else:
                value = self._decode(key)
        except SampleDataError as exc:
            with self._lock:
                self._failed[key] = exc
            raise
        self._store(key, value)
        return value

    def prefetch(self, path: str | Path) -> None:
        """Start decoding ``path`` on the worker thread (no-op if cached or already started)."""
        key = str(path)
        with self._lock:
            if key in self._items or key in self._pending or key in self._failed:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medvision-decode")
            self._pending[key] = self._pool.submit(self._decode, key)

    def drop(self, path: str | Path) -> None:
        """Forget one volume (decoded or being decoded): its caller is done with it."""
        key = str(path)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old[0].nbytes
            pending = self._pending.pop(key, None)
            self._failed.pop(key, None)
        if pending is not None:
            pending.cancel()

    def clear(self) -> None:
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            self._items.clear()
            self._failed.clear()
            self.nbytes = 0
        for future in pending:
            future.cancel()

    def close(self) -> None:
        """Drop every volume and stop the worker thread."""
        self.clear()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
