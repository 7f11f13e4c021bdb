'use strict';
/**
 * cogflight-client: a Node.js client for cogflight's Arrow Flight wire contract
 * (docs/wire-contract.md), on @grpc/grpc-js and apache-arrow. CommonJS.
 *
 *   const { connect } = require('cogflight-client');
 *   const client = connect('grpc://127.0.0.1:8815', { token, tlsRootCerts });
 *   for await (const chip of client.chips(query, { shards: 4 })) {
 *     chip.shape;  // [C, H, W] ([T, C, H, W] for time series)
 *     chip.data;   // Uint16Array (etc.) viewing the received buffer
 *   }
 *   client.close();
 *
 * A client holds one gRPC channel per location it has talked to; calls may run
 * concurrently. Errors are FlightError: `code` is the gRPC status name (INVALID_ARGUMENT,
 * NOT_FOUND, UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE, ...), `message` the
 * server's one-line message.
 */

const { chipsOf, dtypeName, halfToNumber, tensorInfo } = require('./chips');
const { Channels, FlightError, collect, parseLocation, toFlightError, unary } = require('./flight');
const { decodeSchema, recordBatches, stats } = require('./ipc');

/** A query object or JSON text as a query object (copied, never modified in place). */
function asQuery(query) {
  if (typeof query === 'string') {
    try {
      return asQuery(JSON.parse(query));
    } catch (err) {
      if (err instanceof FlightError) throw err;
      throw new FlightError('INVALID_ARGUMENT', `query: not JSON (${err.message})`);
    }
  }
  if (query === null || typeof query !== 'object' || Array.isArray(query)) {
    throw new FlightError('INVALID_ARGUMENT', 'a query is a JSON object (see docs/wire-contract.md)');
  }
  return JSON.parse(JSON.stringify(query));
}

/** The ticket's query when it is one (cogflight tickets are), else null. */
function ticketQuery(ticket) {
  try {
    const doc = JSON.parse(Buffer.from(ticket).toString('utf8'));
    return doc && typeof doc === 'object' && !Array.isArray(doc) ? doc : null;
  } catch {
    return null;
  }
}

function planOf(info) {
  return {
    schema: decodeSchema(info.schema),
    totalRecords: Number(info.total_records),
    totalBytes: Number(info.total_bytes),
    ordered: Boolean(info.ordered),
    descriptor: info.flight_descriptor,
    endpoints: (info.endpoint || []).map((ep) => ({
      ticket: ep.ticket ? ep.ticket.ticket : Buffer.alloc(0),
      locations: (ep.location || []).map((l) => l.uri),
    })),
  };
}

class Client {
  /** See {@link connect}. */
  constructor(location, options = {}) {
    if (parseLocation(location) === null) {
      throw new FlightError('INVALID_ARGUMENT', 'connect to a grpc:// or grpc+tls:// location');
    }
    this.location = location;
    this.channels = new Channels(options);
  }

  _service(location) {
    const where = location && parseLocation(location) !== null ? location : this.location;
    return this.channels.get(where);
  }

  /** DoAction: the result bodies as Buffers. */
  async action(type, body = Buffer.alloc(0)) {
    const request = { type, body: Buffer.isBuffer(body) ? body : Buffer.from(body) };
    const results = await collect(this._service(), 'DoAction', request, this.channels.metadata());
    return results.map((r) => r.body);
  }

  async _jsonAction(type, body) {
    const results = await this.action(type, body);
    return results.length ? JSON.parse(results[0].toString('utf8')) : null;
  }

  /** The server's health document. */
  health() {
    return this._jsonAction('health');
  }

  /** Every Collection this client may read: [{name, scenes, bands, ...}]. */
  listCollections() {
    return this._jsonAction('collections');
  }

  /** One Collection's summary (the `describe` action). */
  describe(name) {
    return this._jsonAction('describe', Buffer.from(String(name), 'utf8'));
  }

  /** ListFlights: one {path, totalRecords, schema} per Collection. */
  async listFlights() {
    const infos = await collect(this._service(), 'ListFlights', { expression: Buffer.alloc(0) },
      this.channels.metadata());
    return infos.map((info) => {
      const plan = planOf(info);
      return { path: plan.descriptor ? plan.descriptor.path : [], totalRecords: plan.totalRecords,
        schema: plan.schema };
    });
  }

  /**
   * GetFlightInfo for a query (command descriptor): {schema, totalRecords, totalBytes,
   * endpoints: [{ticket: Buffer, locations: [uri]}]}. `shards` asks for that many endpoints.
   */
  async plan(query, { shards } = {}) {
    const doc = asQuery(query);
    if (shards !== undefined && shards !== null) {
      if (doc.shard !== undefined) {
        throw new FlightError('INVALID_ARGUMENT', 'give shards (endpoints to plan) or shard, not both');
      }
      doc.shard = { count: Number(shards) };
    }
    const descriptor = { type: 'CMD', cmd: Buffer.from(JSON.stringify(doc), 'utf8'), path: [] };
    const info = await unary(this._service(), 'GetFlightInfo', descriptor, this.channels.metadata());
    return planOf(info);
  }

  /**
   * One endpoint's RecordBatches. Read at its first location; on UNAVAILABLE, at the next
   * one. A stream that broke after delivering k rows goes on from row k: with `skip: k`
   * in the ticket when the server sends `ordinal` (and so takes `skip`), else by reading
   * again and dropping the first k rows; rows whose ordinal was delivered are dropped.
   */
  async *batches(endpoint) {
    const locations = endpoint.locations && endpoint.locations.length
      ? endpoint.locations : [this.location];
    const base = ticketQuery(endpoint.ticket);
    let delivered = 0;
    let resumable = false; // the stream carries ordinals: the server understands `skip`
    let last = -1; // the highest ordinal delivered (a stream is in ordinal order)
    let lastError = null;
    for (const location of locations) {
      let ticket = endpoint.ticket;
      let drop = 0;
      if (delivered > 0) {
        if (base === null) break; // an opaque ticket: cannot resume mid-stream
        if (resumable) {
          ticket = Buffer.from(JSON.stringify({ ...base, skip: (base.skip || 0) + delivered }));
        } else {
          drop = delivered;
        }
      }
      const call = this._service(location).DoGet({ ticket }, this.channels.metadata());
      try {
        for await (let batch of recordBatches(call)) {
          const ordinals = batch.schema.fields.findIndex((f) => f.name === 'ordinal');
          if (ordinals >= 0) resumable = true;
          if (drop > 0) {
            const n = Math.min(drop, batch.numRows);
            batch = batch.slice(n);
            drop -= n;
          }
          if (ordinals >= 0 && batch.numRows > 0) {
            const column = batch.getChildAt(ordinals);
            let first = 0;
            while (first < batch.numRows && Number(column.get(first)) <= last) first += 1;
            if (first) batch = batch.slice(first);
            if (batch.numRows > 0) last = Number(batch.getChildAt(ordinals).get(batch.numRows - 1));
          }
          if (batch.numRows === 0) continue;
          delivered += batch.numRows;
          yield batch;
        }
        return;
      } catch (err) {
        lastError = toFlightError(err);
        if (lastError.code !== 'UNAVAILABLE') throw lastError;
        stats.failovers += 1;
      } finally {
        call.cancel();
      }
    }
    throw lastError;
  }

  /** One endpoint's chips (see {@link batches} for locations and retries). */
  async *readEndpoint(endpoint) {
    for await (const batch of this.batches(endpoint)) yield* chipsOf(batch);
  }

  /** Plan `query` and read every endpoint in turn: every chip, in endpoint order. */
  async *chips(query, { shards } = {}) {
    const plan = await this.plan(query, { shards });
    for (const endpoint of plan.endpoints) yield* this.readEndpoint(endpoint);
  }

  /** Close every channel. */
  close() {
    this.channels.close();
  }
}

/**
 * Connect to a cogflight server (channels open lazily, on the first call).
 *
 * @param {string} location grpc://host:port, grpc+tls://host:port or grpc+unix:///path
 * @param {object} [options]
 * @param {string} [options.token] bearer token (sent as `authorization: Bearer <token>`)
 * @param {Buffer|string} [options.tlsRootCerts] PEM roots trusted for grpc+tls (default: system)
 * @param {Buffer|string} [options.certChain] client certificate (PEM), for mutual TLS
 * @param {Buffer|string} [options.privateKey] client key (PEM), for mutual TLS
 * @param {object} [options.channelOptions] extra @grpc/grpc-js channel options
 * @returns {Client}
 */
function connect(location, options = {}) {
  return new Client(location, options);
}

module.exports = {
  Client, FlightError, chipsOf, connect, dtypeName, halfToNumber, stats, tensorInfo,
};
