"""YCbCr JPEG tiles decoded as IJG libjpeg 9 decodes them (GDAL in the rasterio wheels).

libjpeg-turbo (imagecodecs, Pillow, and GDAL builds that link it) upsamples 4:2:0
chroma with a triangle filter. IJG libjpeg 7 and later, which the rasterio and
fiona wheels on PyPI bundle (libjpeg 9f), instead run a 16x16 inverse DCT on each
8x8 chroma block ("DCT scaling", jdmaster.c), so no upsampling follows. The two
differ by up to ~70 DN near colour edges. This module reproduces the libjpeg 9
result from pieces libjpeg-turbo can give:

1. Y at full resolution (imagecodecs, out colour space grey: the 8x8 integer IDCT
   both libraries share, so Y is exact).
2. Cb and Cr at their native, half resolution, from a half-scale decode (Pillow's
   ``draft``: luma goes through a 4x4 IDCT and the chroma through the plain 8x8
   one, exactly the samples libjpeg reconstructs before any upsampling).
3. The chroma DCT coefficients, recovered from those samples: forward DCT,
   divided by the quantisation table of the stream, rounded. Exact while the
   rounding error of the 8-bit samples stays under half a quantisation step,
   which holds for common qualities; the few blocks where another coefficient
   set decodes to the same samples (fine quantisation, flat blocks) cost 1-4 DN.
4. libjpeg 9's ``jpeg_idct_16x16`` (jidctint.c) on those coefficients, as two
   exact integer matrix products (each pass of the algorithm is linear up to its
   final shift), and its fixed-point YCbCr->RGB conversion (jdcolor.c).

4:4:4 tiles need only steps 1 (all three planes) and the colour conversion. Streams of
any other layout (4:2:2, 4:1:1, ...) return None, and the caller uses libjpeg-turbo.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import imagecodecs
import numpy as np
from PIL import Image

__all__ = ["decode_ycbcr"]

_CONST_BITS = 13
_PASS1_BITS = 2
_RANGE_CENTER = 512  # CENTERJSAMPLE << RANGE_BITS
_ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
    20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58,
    59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
])  # fmt: skip


def _fix(x: float, bits: int = _CONST_BITS) -> int:
    return int(x * (1 << bits) + 0.5)


def _idct16_linear(z: np.ndarray) -> np.ndarray:
    """jidctint.c jpeg_idct_16x16, one pass without its rounding bias or final shift.

    ``z`` holds the 8 inputs on axis 0; returns the 16 outputs on axis 0. Every step
    is an integer multiply or add, so the pass is an integer matrix (see _A16).
    """
    f = _fix
    i0, i1, i2, i3, i4, i5, i6, i7 = (z[k] for k in range(8))
    tmp0 = i0 << _CONST_BITS
    tmp1 = i4 * f(1.306562965)
    tmp2 = i4 * f(0.541196100)
    tmp10, tmp11, tmp12, tmp13 = tmp0 + tmp1, tmp0 - tmp1, tmp0 + tmp2, tmp0 - tmp2
    z1, z2 = i2, i6
    z3 = z1 - z2
    z4 = z3 * f(0.275899379)
    z3 = z3 * f(1.387039845)
    tmp0 = z3 + z2 * f(2.562915447)
    tmp1 = z4 + z1 * f(0.899976223)
    tmp2 = z3 - z1 * f(0.601344887)
    tmp3 = z4 - z2 * f(0.509795579)
    tmp20, tmp27 = tmp10 + tmp0, tmp10 - tmp0
    tmp21, tmp26 = tmp12 + tmp1, tmp12 - tmp1
    tmp22, tmp25 = tmp13 + tmp2, tmp13 - tmp2
    tmp23, tmp24 = tmp11 + tmp3, tmp11 - tmp3
    z1, z2, z3, z4 = i1, i3, i5, i7
    tmp11 = z1 + z3
    tmp1 = (z1 + z2) * f(1.353318001)
    tmp2 = tmp11 * f(1.247225013)
    tmp3 = (z1 + z4) * f(1.093201867)
    tmp10 = (z1 - z4) * f(0.897167586)
    tmp11 = tmp11 * f(0.666655658)
    tmp12 = (z1 - z2) * f(0.410524528)
    tmp0 = tmp1 + tmp2 + tmp3 - z1 * f(2.286341144)
    tmp13 = tmp10 + tmp11 + tmp12 - z1 * f(1.835730603)
    z1 = (z2 + z3) * f(0.138617169)
    tmp1 = tmp1 + z1 + z2 * f(0.071888074)
    tmp2 = tmp2 + z1 - z3 * f(1.125726048)
    z1 = (z3 - z2) * f(1.407403738)
    tmp11 = tmp11 + z1 - z3 * f(0.766367282)
    tmp12 = tmp12 + z1 + z2 * f(1.971951411)
    z2 = z2 + z4
    z1 = z2 * -f(0.666655658)
    tmp1 = tmp1 + z1
    tmp3 = tmp3 + z1 + z4 * f(1.065388962)
    z2 = z2 * -f(1.247225013)
    tmp10 = tmp10 + z2 + z4 * f(3.141271809)
    tmp12 = tmp12 + z2
    z2 = (z3 + z4) * -f(1.353318001)
    tmp2, tmp3 = tmp2 + z2, tmp3 + z2
    z2 = (z4 - z3) * f(0.410524528)
    tmp10, tmp11 = tmp10 + z2, tmp11 + z2
    return np.stack([
        tmp20 + tmp0, tmp21 + tmp1, tmp22 + tmp2, tmp23 + tmp3,
        tmp24 + tmp10, tmp25 + tmp11, tmp26 + tmp12, tmp27 + tmp13,
        tmp27 - tmp13, tmp26 - tmp12, tmp25 - tmp11, tmp24 - tmp10,
        tmp23 - tmp3, tmp22 - tmp2, tmp21 - tmp1, tmp20 - tmp0,
    ])  # fmt: skip


# The 16x8 integer matrix of one pass, pre-scaled by the pass's power-of-two shift. Its
# entries are < 2**15 and the dequantised coefficients of 8-bit samples < 2**19, so the
# unscaled sums of both passes stay below 2**45, inside float64's 53-bit mantissa:
# float64 BLAS computes them exactly, the power-of-two scaling is exact too, and
# floor(... + bias) is the C code's (... + bias) >> shift.
_A16 = _idct16_linear(np.eye(8, dtype=np.int64)).astype(np.float64)
_PASS1 = _A16 / (1 << (_CONST_BITS - _PASS1_BITS))
_PASS2T = np.ascontiguousarray(_A16.T / (1 << (_CONST_BITS + _PASS1_BITS + 3)))
_BIAS1 = 0.5  # (1 << (CONST_BITS - PASS1_BITS - 1)) >> (CONST_BITS - PASS1_BITS)
# ((RANGE_CENTER << (PASS1_BITS + 3)) + (1 << (PASS1_BITS + 2))) << CONST_BITS, scaled:
_BIAS2 = _RANGE_CENTER + 0.5

# Orthonormal 8-point DCT-II: the forward DCT that JPEG's coefficients are scaled to.
_k = np.arange(8)
_DCT8 = np.cos((2 * _k[None, :] + 1) * _k[:, None] * np.pi / 16) * np.sqrt(2 / 8)
_DCT8[0] /= np.sqrt(2)
_DCT8T = np.ascontiguousarray(_DCT8.T)

# Full-resolution pixels per chunk: keeps the float64 temporaries inside L2.
_CHUNK_PIXELS = 32768


# jdcolor.c build_ycc_rgb_table (SCALEBITS 16), as products rather than tables.
_CR_R = _fix(1.402, 16)
_CB_B = _fix(1.772, 16)
_CR_G = _fix(0.714136286, 16)
_CB_G = _fix(0.344136286, 16)


@dataclass(frozen=True)
class _Frame:
    """What the libjpeg 9 path needs from a stream's headers."""

    height: int
    width: int
    components: tuple[tuple[int, int, int, int], ...]  # (id, h factor, v factor, table)
    quant: dict[int, np.ndarray]  # table id -> 8x8 quantisation steps, natural order


def _frame(stream: bytes) -> _Frame | None:
    """The frame header and quantisation tables, or None where libjpeg 9 would not see YCbCr.

    Accepted: an 8-bit Huffman frame (baseline, extended or progressive) that libjpeg
    takes as YCbCr: no Adobe marker saying otherwise, component ids not 'R','G','B'.
    """
    quant: dict[int, np.ndarray] = {}
    sof: bytes | None = None
    i, n = 2, len(stream)
    while i + 4 <= n:
        if stream[i] != 0xFF:
            return None
        marker = stream[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            break
        length = int.from_bytes(stream[i + 2 : i + 4], "big")
        seg = stream[i + 4 : i + 2 + length]
        if marker == 0xDB:
            j = 0
            while j < len(seg):
                wide, table = seg[j] >> 4, seg[j] & 15
                size = 128 if wide else 64
                vals = np.frombuffer(seg[j + 1 : j + 1 + size], ">u2" if wide else np.uint8)
                if vals.size != 64:
                    return None
                steps = np.empty(64, np.float64)
                steps[_ZIGZAG] = vals
                quant[table] = steps.reshape(8, 8)
                j += 1 + size
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in (0xC0, 0xC1, 0xC2) or len(seg) < 6 or seg[0] != 8:
                return None
            sof = seg
        elif marker == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12 and seg[11] != 1:
            return None
        i += 2 + length
    if sof is None or len(sof) < 6 + 3 * sof[5]:
        return None
    comps = tuple(
        (sof[6 + 3 * c], sof[7 + 3 * c] >> 4, sof[7 + 3 * c] & 15, sof[8 + 3 * c])
        for c in range(sof[5])
    )
    if [c[0] for c in comps] == [82, 71, 66]:
        return None
    height, width = int.from_bytes(sof[1:3], "big"), int.from_bytes(sof[3:5], "big")
    return _Frame(height, width, comps, quant)


def _splice(tile: bytes, tables: bytes | None) -> bytes:
    """One self-contained stream: the JPEGTables segments inserted after the tile's SOI."""
    if not tables or len(tables) < 4:
        return tile
    return tile[:2] + tables[2:-2] + tile[2:]


def _chroma16(planes: np.ndarray, quant: np.ndarray) -> np.ndarray:
    """Native Cb and Cr, (2, rows, w) with rows a multiple of 8 -> libjpeg 9's (2, 2*rows, 2*w).

    Coefficients: forward DCT of each 8x8 block, rounded to the quantisation grid
    (``quant``: (2, 8, 8)). Then jpeg_idct_16x16 on each: pass 1 on columns, pass 2 on
    rows, with their biases, shifts and range limit (mask to 10 bits, then clamp:
    jdct.h IDCT_range_limit). Results are centred on 0 (sample - 128). The layout
    stays (plane, block row, row, block column, column), so every product is one BLAS
    call and nothing needs a transpose.
    """
    _, h, w = planes.shape
    by, bx = h // 8, w // 8
    c = np.matmul(_DCT8, planes.reshape(2 * by, 8, w).astype(np.float64))  # vertical
    c = (c.reshape(-1, 8) @ _DCT8T).reshape(2, by, 8, bx, 8)  # horizontal
    c[:, :, 0, :, 0] -= 1024.0  # level shift: the DC of a flat 128 block is 8 * 128
    q = quant[:, None, :, None, :]
    c /= q
    np.rint(c, out=c)
    c *= q
    ws = np.matmul(_PASS1, c.reshape(2 * by, 8, w))  # (2 * by, 16, bx * 8)
    ws += _BIAS1
    np.floor(ws, out=ws)
    out: np.ndarray = ws.reshape(-1, 8) @ _PASS2T  # (2 * by * 16 * bx, 16)
    out += _BIAS2
    np.floor(out, out=out)
    v = out.astype(np.int32)
    v &= 2 * _RANGE_CENTER - 1
    v -= _RANGE_CENTER
    np.clip(v, -128, 127, out=v)
    return v.reshape(2, 2 * h, 2 * w)


def _to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, out: np.ndarray) -> None:
    """jdcolor.c ycc_rgb_convert into ``out`` (uint8 RGB); ``cb``/``cr`` are centred on 0."""
    half = 1 << 15
    yi = y.astype(np.int32)
    t = cr * _CR_R
    t += half
    t >>= 16
    t += yi
    np.clip(t, 0, 255, out=t)
    out[..., 0] = t
    t = cb * -_CB_G
    t -= cr * _CR_G
    t += half
    t >>= 16
    t += yi
    np.clip(t, 0, 255, out=t)
    out[..., 1] = t
    t = cb * _CB_B
    t += half
    t >>= 16
    t += yi
    np.clip(t, 0, 255, out=t)
    out[..., 2] = t


def decode_ycbcr(tile: bytes, tables: bytes | None, height: int, width: int) -> np.ndarray | None:
    """RGB of a 4:2:0 or 4:4:4 YCbCr JPEG tile as libjpeg 9 decodes it, else None.

    Raises what the codecs raise for a corrupt stream (the caller turns it into a
    DecodeError).
    """
    stream = _splice(tile, tables)
    frame = _frame(stream)
    if (
        frame is None
        or (frame.height, frame.width) != (height, width)
        or len(frame.components) != 3
        or any(c[1:3] != (1, 1) for c in frame.components[1:])
    ):
        return None
    luma = frame.components[0][1:3]
    if luma == (1, 1):
        # No upsampling in either library; only libjpeg-turbo's SIMD colour conversion
        # strays from jdcolor.c's (by 1 DN on ~0.02 % of values).
        ycc = np.asarray(
            imagecodecs.jpeg8_decode(stream, colorspace="YCBCR", outcolorspace="YCBCR")
        )
        if ycc.shape != (height, width, 3):
            raise ValueError(f"JPEG decoded to {ycc.shape} for a {width}x{height} tile")
        out = np.empty((height, width, 3), np.uint8)
        cb = ycc[..., 1].astype(np.int32) - 128
        cr = ycc[..., 2].astype(np.int32) - 128
        _to_rgb(ycc[..., 0], cb, cr, out)
        return out
    limit = Image.MAX_IMAGE_PIXELS  # Pillow warns past it: leave such tiles to libjpeg-turbo
    if (
        luma != (2, 2)
        or height % 16
        or width % 16
        or any(c[3] not in frame.quant for c in frame.components[1:])
        or (limit is not None and height * width > limit)
    ):
        return None
    y = np.asarray(imagecodecs.jpeg8_decode(stream, colorspace="YCBCR", outcolorspace="GRAY"))
    with Image.open(io.BytesIO(stream)) as im:
        if im.size != (width, height) or im.mode != "RGB":
            raise ValueError(
                f"JPEG stream is {im.mode} {im.size[0]}x{im.size[1]}, tile is {width}x{height}"
            )
        im.draft("YCbCr", (width // 2, height // 2))
        half = np.asarray(im)
    if y.shape != (height, width) or half.shape != (height // 2, width // 2, 3):
        raise ValueError(f"JPEG decoded to {y.shape} and {half.shape} for a {width}x{height} tile")
    quants = np.stack([frame.quant[c[3]] for c in frame.components[1:]])
    chroma = half[:, :, 1:].transpose(2, 0, 1)
    out = np.empty((height, width, 3), np.uint8)
    rows = max(16, _CHUNK_PIXELS // width // 16 * 16)
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        cb, cr = _chroma16(chroma[:, r0 // 2 : r1 // 2], quants)
        _to_rgb(y[r0:r1], cb, cr, out[r0:r1])
    return out
