'use strict';
/**
 * Chip stream RecordBatches as plain chips: metadata as JS values, pixels as typed arrays.
 *
 * The `chip` and `valid` columns are `arrow.fixed_shape_tensor` extension columns.
 * apache-arrow does not know extension types: it reads their storage, a
 * FixedSizeList of the pixel type, and keeps the field metadata, from which the shape
 * (`ARROW:extension:metadata` -> `shape`) is taken. Each chip's `data` is a subarray
 * view of the batch's values buffer, so no pixel is copied here.
 *
 * Pure functions; nothing shared.
 */

const arrow = require('apache-arrow');

const { Type, TimeUnit, Precision } = arrow;
const TENSOR = 'arrow.fixed_shape_tensor';
/** Columns every chip has, exposed under their camelCase names. */
const META = { id: 'id', datetime: 'datetime', geometry_index: 'geometryIndex', crs: 'crs',
  transform: 'transform', bounds: 'bounds', ordinal: 'ordinal' };

/** numpy-style name of an Int or FloatingPoint Arrow type. */
function dtypeName(type) {
  if (type.typeId === Type.Int) return `${type.isSigned ? 'int' : 'uint'}${type.bitWidth}`;
  if (type.typeId === Type.Float) {
    return { [Precision.HALF]: 'float16', [Precision.SINGLE]: 'float32',
      [Precision.DOUBLE]: 'float64' }[type.precision];
  }
  if (type.typeId === Type.Bool) return 'bool';
  return String(type);
}

/** A tensor field's shape and dim names (from the extension metadata; null when absent). */
function tensorInfo(field) {
  const meta = field.metadata;
  if (!meta || meta.get('ARROW:extension:name') !== TENSOR) return null;
  const doc = JSON.parse(meta.get('ARROW:extension:metadata') || '{}');
  if (doc.permutation && doc.permutation.some((p, k) => p !== k)) {
    throw new Error(`${field.name}: permuted fixed_shape_tensor is not supported`);
  }
  return { shape: doc.shape, dimNames: doc.dim_names || null };
}

/** ISO 8601 (UTC, microseconds) of a raw timestamp value in its unit. */
function isoTimestamp(raw, unit) {
  const v = BigInt(raw);
  const perSecond = { [TimeUnit.SECOND]: 1n, [TimeUnit.MILLISECOND]: 1000n,
    [TimeUnit.MICROSECOND]: 1000000n, [TimeUnit.NANOSECOND]: 1000000000n }[unit];
  let seconds = v / perSecond;
  let frac = v % perSecond;
  if (frac < 0n) { frac += perSecond; seconds -= 1n; }
  const micros = (frac * 1000000n) / perSecond;
  const base = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
  return micros === 0n ? `${base}Z` : `${base}.${String(micros).padStart(6, '0')}Z`;
}

/** The number an IEEE 754 half-precision value's bits stand for (float16 chips' `data`). */
function halfToNumber(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

const vectors = new WeakMap();
/**
 * One value of `data` at `i` as a plain JS value: lists as arrays, structs as objects,
 * timestamps as ISO 8601, int64 as Number when safe. (Data.slice slices the buffers and
 * fixed-width children, so `i` indexes them directly; `offset` is only the validity bit's.)
 */
function cell(data, i) {
  if (!data.getValid(i)) return null;
  const type = data.type;
  switch (type.typeId) {
    case Type.Timestamp:
      return isoTimestamp(data.values[i], type.unit);
    case Type.List: {
      const start = Number(data.valueOffsets[i]);
      const end = Number(data.valueOffsets[i + 1]);
      const out = [];
      for (let j = start; j < end; j += 1) out.push(cell(data.children[0], j));
      return out;
    }
    case Type.FixedSizeList: {
      const n = type.listSize;
      const out = new Array(n);
      for (let k = 0; k < n; k += 1) out[k] = cell(data.children[0], i * n + k);
      return out;
    }
    case Type.Struct: {
      const out = {};
      type.children.forEach((field, k) => { out[field.name] = cell(data.children[k], i); });
      return out;
    }
    default: {
      let vector = vectors.get(data);
      if (vector === undefined) {
        vector = arrow.makeVector(data);
        vectors.set(data, vector);
      }
      const value = vector.get(i);
      if (typeof value === 'bigint') {
        return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
          ? Number(value) : value;
      }
      return value;
    }
  }
}

/** A getter (row -> typed array view) for a fixed_shape_tensor column of a batch. */
function tensorColumn(batch, name) {
  const index = batch.schema.fields.findIndex((f) => f.name === name);
  if (index < 0) return null;
  const field = batch.schema.fields[index];
  const info = tensorInfo(field);
  if (info === null) throw new Error(`column ${name} is not ${TENSOR}`);
  const data = batch.getChildAt(index).data[0];
  const child = data.children[0];
  const size = info.shape.reduce((a, b) => a * b, 1);
  if (data.type.listSize !== size) {
    throw new Error(`column ${name}: shape ${info.shape} does not match list size ${data.type.listSize}`);
  }
  const values = child.values; // already sliced to this column's rows (see Data.slice)
  return {
    shape: info.shape,
    dtype: dtypeName(child.type),
    at: (i) => values.subarray(i * size, (i + 1) * size),
  };
}

/**
 * Every chip of a RecordBatch: {id, datetime, geometryIndex, crs, transform, bounds,
 * ordinal (when the server sends it), shape, dtype, data, valid, columns}.
 * `columns` holds the pass-through Collection columns by name.
 */
function* chipsOf(batch) {
  const chip = tensorColumn(batch, 'chip');
  if (chip === null) throw new Error('not a chip stream: no "chip" column');
  const valid = tensorColumn(batch, 'valid');
  const fields = batch.schema.fields;
  const plain = [];
  fields.forEach((field, k) => {
    if (field.name !== 'chip' && field.name !== 'valid') {
      plain.push([field.name, batch.getChildAt(k).data[0]]);
    }
  });
  for (let i = 0; i < batch.numRows; i += 1) {
    const out = {};
    const columns = {};
    for (const [name, data] of plain) {
      const value = cell(data, i);
      if (name in META) out[META[name]] = value;
      else columns[name] = value;
    }
    out.shape = chip.shape.slice();
    out.dtype = chip.dtype;
    out.data = chip.at(i);
    out.valid = valid ? valid.at(i) : null;
    out.columns = columns;
    yield out;
  }
}

module.exports = { chipsOf, dtypeName, halfToNumber, isoTimestamp, tensorInfo };
