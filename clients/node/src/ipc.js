'use strict';
/**
 * Arrow IPC from Flight: each FlightData is one IPC message whose flatbuffer Message is
 * `data_header` and whose body is `data_body`. Framed again as an IPC stream
 * (0xFFFFFFFF, little-endian metadata length, metadata padded to 8 bytes, body), they
 * feed apache-arrow's stream reader, which yields RecordBatches as messages arrive.
 *
 * The body is handed to apache-arrow as it came off the wire (no copy) when it lies at
 * an 8-byte-aligned offset of its buffer, which cogflight servers arrange; otherwise it is
 * copied once into aligned memory (typed arrays need aligned offsets) and
 * `stats.copiedBodies` counts it. One generator per stream; nothing shared but `stats`.
 */

const arrow = require('apache-arrow');

const CONTINUATION = 0xffffffff;
const EOS = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

/**
 * Process-wide counters, for tests and tuning: IPC messages and bodies read, bodies
 * copied for alignment, and endpoint reads moved to another location after UNAVAILABLE
 * (counted by the client).
 */
const stats = { messages: 0, bodies: 0, copiedBodies: 0, failovers: 0 };

/** Continuation marker + padded length + the flatbuffer Message, padded to 8 bytes. */
function frameHeader(header) {
  const padded = (header.length + 7) & ~7;
  const out = new Uint8Array(8 + padded);
  const view = new DataView(out.buffer);
  view.setUint32(0, CONTINUATION, true);
  view.setInt32(4, padded, true);
  out.set(header, 8);
  return out;
}

/** A body typed arrays can view: as it is when 8-byte aligned, else one aligned copy. */
function alignedBody(body) {
  stats.bodies += 1;
  const bytes = new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  if (body.byteOffset % 8 === 0) return bytes;
  stats.copiedBodies += 1;
  const copy = new Uint8Array(body.byteLength);
  copy.set(bytes);
  return copy;
}

/**
 * The IPC stream bytes of a FlightData stream, chunk by chunk. A transport error ends
 * the byte stream cleanly (so apache-arrow's reader does not swallow it) and is left in
 * `state.error` for the caller to raise.
 */
async function* ipcChunks(messages, state) {
  try {
    for await (const data of messages) {
      const header = data.data_header;
      if (!header || header.length === 0) continue; // app_metadata-only message
      stats.messages += 1;
      yield frameHeader(header);
      const body = data.data_body;
      if (body && body.length > 0) yield alignedBody(body);
    }
  } catch (err) {
    state.error = err;
  }
  yield EOS;
}

/**
 * RecordBatches of a FlightData stream, as they arrive. After a transport error every
 * batch received whole is still yielded, then the error is thrown.
 */
async function* recordBatches(messages) {
  const state = { error: null };
  let reader;
  try {
    reader = await arrow.RecordBatchReader.from(ipcChunks(messages, state));
    for await (const batch of reader) yield batch;
  } catch (err) {
    if (!state.error) throw err; // else: a stream cut short, reported below
  } finally {
    // A consumer that stopped early: end the byte source (and so the call) too.
    if (reader && !reader.closed) {
      try {
        await reader.cancel();
      } catch {
        // already failing or finished: nothing more to release
      }
    }
  }
  if (state.error) throw state.error;
}

/** The arrow Schema of FlightInfo.schema / SchemaResult.schema (an IPC Schema message). */
function decodeSchema(bytes) {
  if (!bytes || bytes.length === 0) return null;
  const buf = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const continued = new DataView(buf.buffer, buf.byteOffset, 4).getUint32(0, true) === CONTINUATION;
  const prefix = continued ? new Uint8Array(0) : new Uint8Array([0xff, 0xff, 0xff, 0xff]);
  const stream = new Uint8Array(prefix.length + buf.length + EOS.length);
  stream.set(prefix, 0);
  stream.set(buf, prefix.length);
  stream.set(EOS, prefix.length + buf.length);
  const reader = arrow.RecordBatchReader.from(stream);
  reader.open();
  return reader.schema;
}

module.exports = { decodeSchema, frameHeader, recordBatches, stats };
