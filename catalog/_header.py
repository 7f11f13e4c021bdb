"""How the raw IFDs of a GeoTIFF become a :class:`~catalog.HeaderRecord`.

Files the server cannot serve correctly are rejected here, at indexing time,
with :class:`~catalog.UnsupportedLayoutError` naming the file and the reason;
so are files over the storage limits (``max_samples`` bands per file,
``max_tile_bytes`` decoded bytes per tile), which bound the work of indexing a
file and the memory of reading one tile. Every value that reaches a
:class:`HeaderRecord` is in the range its index column holds.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cogflight_core import HeaderError, UnsupportedLayoutError

from ._geokeys import (
    RASTER_TYPE,
    GeoKeyError,
    crs_from_geokeys,
    geotransform_from_tags,
    parse_geokeys,
)
from ._records import COMPRESSIONS, HeaderRecord, ImageRecord, levels_summary, parse_nodata
from ._settings import settings
from ._tiff import IFD, RawTiff

__all__ = [
    "COMPRESSIONS",
    "HeaderRecord",
    "ImageRecord",
    "header_from_raw",
    "levels_summary",
    "parse_nodata",
]

logger = logging.getLogger("cogflight.catalog")

_KNOWN_UNSUPPORTED = {
    2: "CCITT RLE",
    3: "CCITT Group 3",
    4: "CCITT Group 4",
    6: "old-style JPEG",
    34712: "JPEG 2000",
    50002: "JPEG XL",
    52546: "JPEG XL",
}
_DTYPES = {
    (1, 8): "uint8",
    (1, 16): "uint16",
    (1, 32): "uint32",
    (1, 64): "uint64",
    (2, 8): "int8",
    (2, 16): "int16",
    (2, 32): "int32",
    (2, 64): "int64",
    (3, 16): "float16",
    (3, 32): "float32",
    (3, 64): "float64",
}
_FILETYPE_REDUCED = 1
_FILETYPE_MASK = 4
_PHOTOMETRIC_MASK = 4
_PHOTOMETRIC_YCBCR = 6


@lru_cache(maxsize=256)
def _crs_string(items: tuple[tuple[int, object], ...]) -> str:
    crs = crs_from_geokeys(dict(items))  # type: ignore[arg-type]
    auth = crs.to_authority(min_confidence=100)
    if auth is not None:
        return f"{auth[0]}:{auth[1]}"
    return str(crs.to_wkt())


def _first(values: object, default: int | None = None) -> int | None:
    if values is None:
        return default
    arr = np.asarray(values).ravel()
    return int(arr[0]) if arr.size else default


def _as_bytes(value: object) -> bytes | None:
    """UNDEFINED tags decode to bytes, BYTE-typed ones to arrays; accept both."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, np.ndarray):
        return value.astype(np.uint8).tobytes()
    return None


def _uniform(href: str, values: object, what: str, default: int) -> int:
    if values is None:
        return default
    arr = np.asarray(values).ravel()
    if arr.size == 0:
        return default
    if not np.all(arr == arr[0]):
        distinct = np.unique(arr)  # numpy, bounded below: a hostile tag may hold millions
        shown = ", ".join(str(v) for v in distinct[:8].tolist())
        more = f", ... ({distinct.size} values)" if distinct.size > 8 else ""
        raise UnsupportedLayoutError(
            href, f"samples differ in {what} ([{shown}{more}]); cogflight needs one"
        )
    return int(arr[0])


@dataclass(frozen=True, slots=True)
class _Limits:
    max_samples: int
    max_tile_bytes: int


def _image(href: str, ifd: IFD, *, is_mask: bool, limits: _Limits) -> tuple[ImageRecord, int, int]:
    """Interpret one IFD as a tiled image; returns the image, samples and sample format."""
    tags = ifd.tags
    where = f"IFD at byte {ifd.offset}"
    width = _first(tags.get(256))
    height = _first(tags.get(257))
    if width is None or height is None:
        raise HeaderError(href, f"{where} lacks ImageWidth/ImageLength")
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise HeaderError(href, f"{where} has an impossible size {width} x {height}")
    if 322 not in tags or 323 not in tags:
        if 273 in ifd.present:
            raise UnsupportedLayoutError(
                href,
                "stripped (not tiled) layout; convert it to a tiled cloud-optimized GeoTIFF, "
                "e.g. `gdal_translate -of COG in.tif out.tif`",
            )
        raise HeaderError(href, f"{where} has neither tiles nor strips")
    tw = _first(tags[322]) or 0
    th = _first(tags[323]) or 0
    if not (0 < tw <= 65536 and 0 < th <= 65536):
        raise HeaderError(href, f"{where} has an impossible tile size {tw} x {th}")
    samples = _first(tags.get(277), 1) or 1
    if not 0 < samples <= 65535:
        raise HeaderError(href, f"{where} declares {samples} samples per pixel")
    if samples > limits.max_samples:
        raise UnsupportedLayoutError(
            href,
            f"{where} declares {samples} samples (bands) per pixel, over the limit of "
            f"{limits.max_samples} (max_samples, COGFLIGHT_MAX_SAMPLES)",
        )
    bits = _uniform(href, tags.get(258), "bits per sample", 1)
    sample_format = _uniform(href, tags.get(339), "sample format", 1)
    compression = _first(tags.get(259), 1) or 1
    photometric = _first(tags.get(262), 1)
    planar = _first(tags.get(284), 1) or 1
    predictor = _first(tags.get(317), 1) or 1
    if planar not in (1, 2):
        raise HeaderError(href, f"{where} has invalid PlanarConfiguration {planar}")
    if compression not in COMPRESSIONS:
        name = _KNOWN_UNSUPPORTED.get(compression, "unknown")
        raise UnsupportedLayoutError(
            href,
            f"compression {compression} ({name}) is not supported; supported are "
            f"{', '.join(sorted(set(COMPRESSIONS.values())))}",
        )
    if predictor not in (1, 2, 3):
        raise UnsupportedLayoutError(href, f"predictor {predictor} is not supported")
    per_tile = 1 if planar == 2 else samples
    tile_bytes = (tw * bits * per_tile + 7) // 8 * th
    if tile_bytes > limits.max_tile_bytes:
        raise UnsupportedLayoutError(
            href,
            f"{where} has {tw} x {th} tiles of {per_tile} x {bits}-bit samples: "
            f"{tile_bytes} decoded bytes per tile, over the limit of {limits.max_tile_bytes} "
            "(max_tile_bytes, COGFLIGHT_MAX_TILE_BYTES); re-tile it, e.g. "
            "`gdal_translate -of COG -co BLOCKSIZE=512 in.tif out.tif`",
        )
    tiles = (-(-width // tw)) * (-(-height // th)) * (samples if planar == 2 else 1)
    offsets = tags.get(324)
    counts = tags.get(325)
    if offsets is None or counts is None:
        raise HeaderError(href, f"{where} is tiled but lacks TileOffsets/TileByteCounts")
    offsets_arr = np.asarray(offsets, dtype=np.uint64).ravel()
    counts_arr = np.asarray(counts, dtype=np.uint64).ravel()
    if offsets_arr.size != tiles or counts_arr.size != tiles:
        raise HeaderError(
            href,
            f"{where} holds {offsets_arr.size} tile offsets and {counts_arr.size} byte counts, "
            f"expected {tiles} for {width} x {height} with {tw} x {th} tiles",
        )
    jpeg_tables = tags.get(347)
    ycbcr = tags.get(530)
    lerc = tags.get(50674)
    if ycbcr is not None and photometric == _PHOTOMETRIC_YCBCR:
        factors = np.asarray(ycbcr).ravel()[:2]
        if factors.size < 2 or not np.isin(factors, (1, 2, 4)).all():
            raise HeaderError(href, f"{where} has invalid YCbCrSubSampling {factors.tolist()}")
    if lerc is not None and np.asarray(lerc).max(initial=0) >= 2**31:
        raise HeaderError(href, f"{where} has out-of-range LercParameters")
    image = ImageRecord(
        width=width,
        height=height,
        tile_width=tw,
        tile_height=th,
        compression=compression,
        predictor=predictor,
        photometric=photometric if photometric is not None else 1,
        planar_config=planar,
        bits_per_sample=bits,
        tile_offsets=offsets_arr,
        tile_byte_counts=counts_arr,
        jpeg_tables=_as_bytes(jpeg_tables),
        ycbcr_subsampling=(
            tuple(int(v) for v in np.asarray(ycbcr).ravel()[:2])  # type: ignore[arg-type]
            if ycbcr is not None and photometric == _PHOTOMETRIC_YCBCR
            else ((2, 2) if photometric == _PHOTOMETRIC_YCBCR else None)
        ),
        lerc_parameters=(
            tuple(int(v) for v in np.asarray(lerc).ravel()) if lerc is not None else None
        ),
    )
    if not is_mask:
        _check_codec(href, image, samples, sample_format, bits)
    return image, samples, sample_format


def _check_codec(href: str, img: ImageRecord, samples: int, sample_format: int, bits: int) -> None:
    dtype = _DTYPES.get((sample_format, bits))
    if dtype is None:
        kind = {1: "unsigned", 2: "signed", 3: "float", 4: "void", 5: "complex int", 6: "complex"}
        raise UnsupportedLayoutError(
            href,
            f"{bits}-bit {kind.get(sample_format, str(sample_format))} samples are not "
            "supported (8/16/32/64-bit integers and 16/32/64-bit floats are)",
        )
    name = COMPRESSIONS[img.compression]
    if img.predictor == 3 and sample_format != 3:
        raise UnsupportedLayoutError(href, "floating-point predictor (3) on integer samples")
    if name == "jpeg" and dtype != "uint8":
        raise UnsupportedLayoutError(href, f"JPEG compression of {dtype} samples is not supported")
    if img.photometric == _PHOTOMETRIC_YCBCR and name != "jpeg":
        raise UnsupportedLayoutError(
            href, "YCbCr photometric without JPEG compression is not supported"
        )
    if img.photometric >= 8:
        raise UnsupportedLayoutError(
            href, f"photometric interpretation {img.photometric} (CIE Lab/Log) is not supported"
        )
    if name == "webp" and (dtype != "uint8" or samples not in (3, 4) or img.planar_config != 1):
        raise UnsupportedLayoutError(href, "WebP tiles must hold 3 or 4 interleaved uint8 samples")


_ITEM_SAMPLE = re.compile(r"^\d+$")


def parse_gdal_metadata(
    text: str | None, samples: int
) -> tuple[tuple[float | None, ...], tuple[float | None, ...], tuple[str | None, ...]]:
    """Per-sample scale, offset and description from a GDAL_METADATA XML string."""
    scales: list[float | None] = [None] * samples
    offsets: list[float | None] = [None] * samples
    descriptions: list[str | None] = [None] * samples
    if not text or "<!DOCTYPE" in text or "<!ENTITY" in text:
        return tuple(scales), tuple(offsets), tuple(descriptions)
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        logger.warning("ignoring unparsable GDAL_METADATA (%d characters)", len(text))
        return tuple(scales), tuple(offsets), tuple(descriptions)
    for item in root.iter("Item"):
        sample = item.get("sample")
        role = (item.get("role") or "").lower()
        name = (item.get("name") or "").upper()
        if sample is None or not _ITEM_SAMPLE.match(sample):
            continue
        i = int(sample)
        if not 0 <= i < samples:
            continue
        value = (item.text or "").strip()
        try:
            if role == "scale" or name == "SCALE":
                scales[i] = float(value)
            elif role == "offset" or name == "OFFSET":
                offsets[i] = float(value)
            elif role == "description" or name == "DESCRIPTION":
                descriptions[i] = value
        except ValueError:
            logger.warning("ignoring GDAL_METADATA item %s=%r", name, value)
    return tuple(scales), tuple(offsets), tuple(descriptions)


def header_from_raw(
    href: str,
    raw: RawTiff,
    *,
    max_samples: int | None = None,
    max_tile_bytes: int | None = None,
) -> HeaderRecord:
    """Interpret the IFDs of a file as a servable GeoTIFF.

    ``max_samples`` and ``max_tile_bytes`` default to the storage settings.

    Raises:
        HeaderError: the IFDs contradict themselves.
        UnsupportedLayoutError: valid TIFF the server cannot serve correctly, or one
            over a limit (the message names it).
    """
    s = settings()
    limits = _Limits(
        s.max_samples if max_samples is None else max_samples,
        s.max_tile_bytes if max_tile_bytes is None else max_tile_bytes,
    )
    mains: list[IFD] = []
    overviews: list[IFD] = []
    mask_ifds: list[IFD] = []
    for ifd in raw.ifds:
        subfile = _first(ifd.tags.get(254), 0) or 0
        old_subfile = _first(ifd.tags.get(255), 0) or 0
        photometric = _first(ifd.tags.get(262), 1)
        if subfile & _FILETYPE_MASK and photometric == _PHOTOMETRIC_MASK:
            mask_ifds.append(ifd)
        elif subfile & _FILETYPE_REDUCED or old_subfile == 2:
            overviews.append(ifd)
        elif subfile & _FILETYPE_MASK:
            raise UnsupportedLayoutError(
                href, f"IFD at byte {ifd.offset} is a transparency mask that is not 1-bit/8-bit"
            )
        else:
            mains.append(ifd)
    if not mains:
        raise HeaderError(href, "no full-resolution image (every IFD is an overview or mask)")
    if len(mains) > 1:
        raise UnsupportedLayoutError(
            href,
            f"{len(mains)} full-resolution images (a multi-page TIFF); cogflight serves "
            "single-image GeoTIFFs: split the pages into separate files",
        )
    main = mains[0]
    base, samples, sample_format = _image(href, main, is_mask=False, limits=limits)
    dtype = _DTYPES[(sample_format, base.bits_per_sample)]

    levels = [base]
    for ifd in sorted(overviews, key=lambda i: -(_first(i.tags.get(256)) or 0)):
        img, ov_samples, ov_format = _image(href, ifd, is_mask=False, limits=limits)
        if (ov_samples, ov_format, img.bits_per_sample) != (
            samples,
            sample_format,
            base.bits_per_sample,
        ):
            raise UnsupportedLayoutError(
                href, f"overview {img.width} x {img.height} differs from the image in sample layout"
            )
        if img.width > base.width or img.height > base.height:
            raise HeaderError(href, "an overview is larger than the full-resolution image")
        levels.append(img)

    masks: list[ImageRecord | None] = [None] * len(levels)
    for ifd in mask_ifds:
        img, _, _ = _image(href, ifd, is_mask=True, limits=limits)
        if img.bits_per_sample not in (1, 8):
            raise UnsupportedLayoutError(href, f"{img.bits_per_sample}-bit internal mask")
        match = [
            i
            for i, lv in enumerate(levels)
            if (lv.width, lv.height) == (img.width, img.height) and masks[i] is None
        ]
        if not match:
            logger.warning(
                "%s: internal mask %d x %d matches no image; ignored", href, img.width, img.height
            )
            continue
        masks[match[0]] = img
    if all(m is None for m in masks):
        masks = []

    tags = main.tags
    directory = tags.get(34735)
    keys: dict[int, object] = {}
    try:
        if directory is not None:
            doubles = tags.get(34736)
            ascii_params = tags.get(34737)
            keys = parse_geokeys(
                np.asarray(directory),
                np.asarray(doubles) if doubles is not None else None,
                ascii_params if isinstance(ascii_params, str) else None,
            )  # type: ignore[assignment]
        pixel_is_point = keys.get(RASTER_TYPE) == 2
        geotransform = geotransform_from_tags(tags, pixel_is_point)
        if directory is None:
            raise GeoKeyError(
                "the file has a geotransform but no GeoKeyDirectory (no CRS); assign a CRS, "
                "e.g. `gdal_edit.py -a_srs EPSG:XXXX`"
            )
        crs = _crs_string(tuple(sorted((k, v) for k, v in keys.items() if k != RASTER_TYPE)))
    except GeoKeyError as exc:
        raise UnsupportedLayoutError(href, str(exc)) from exc

    extra = tags.get(338)
    if extra is not None and np.asarray(extra).max(initial=0) > 2:
        raise HeaderError(href, "ExtraSamples holds values other than 0, 1 and 2")
    gdal_metadata = tags.get(42112)
    gdal_metadata_text = gdal_metadata if isinstance(gdal_metadata, str) else None
    nodata = tags.get(42113)
    scales, offsets, descriptions = parse_gdal_metadata(gdal_metadata_text, samples)
    return HeaderRecord(
        href=href,
        byte_order="<" if raw.byte_order == "<" else ">",
        bigtiff=raw.bigtiff,
        dtype=dtype,
        samples=samples,
        sample_format=sample_format,
        extra_samples=tuple(int(v) for v in np.asarray(extra).ravel()) if extra is not None else (),
        crs=crs,
        geotransform=geotransform,
        raster_type="point" if pixel_is_point else "area",
        nodata=nodata.strip() if isinstance(nodata, str) and nodata.strip() else None,
        scales=scales,
        offsets=offsets,
        descriptions=descriptions,
        gdal_metadata=gdal_metadata_text,
        levels=tuple(levels),
        masks=tuple(masks),
        round_trips=raw.round_trips,
        header_bytes=raw.bytes_read,
    )
