'use strict';
/**
 * The Flight transport: the protocol definition, locations, channels and errors.
 *
 * One gRPC client (channel) per distinct location, opened on first use and shared by
 * every call to it; all are closed by `Channels.close()`. Nothing here knows cogflight's
 * query format: this is plain Arrow Flight over @grpc/grpc-js.
 */

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', 'proto', 'Flight.proto');

/** Loaded once per process; keepCase keeps the specification's snake_case field names. */
let service = null;
function flightService() {
  if (service === null) {
    const definition = protoLoader.loadSync(PROTO, {
      keepCase: true,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    service = grpc.loadPackageDefinition(definition).arrow.flight.protocol.FlightService;
  }
  return service;
}

const CODE_NAMES = Object.fromEntries(
  Object.entries(grpc.status).map(([name, code]) => [code, name]),
);

/** A server's status as a JS Error: `code` is the gRPC status name (e.g. NOT_FOUND). */
class FlightError extends Error {
  constructor(code, message, { grpcCode, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'FlightError';
    this.code = code;
    this.grpcCode = grpcCode;
  }
}

/** The server's one-line message: pyarrow appends ". Detail: ..." to handler errors. */
function cleanMessage(text) {
  let message = String(text ?? '');
  const detail = message.indexOf('. Detail:');
  if (detail >= 0) message = message.slice(0, detail);
  // grpc-js ends connection failures with an empty "Resolution note:".
  return message.split('\n')[0].replace(/\.?\s*Resolution note:\s*$/, '').trim();
}

/** Any error of a gRPC call as a FlightError (errors that already are pass through). */
function toFlightError(err) {
  if (err instanceof FlightError) return err;
  if (err && typeof err.code === 'number' && CODE_NAMES[err.code] !== undefined) {
    return new FlightError(CODE_NAMES[err.code], cleanMessage(err.details ?? err.message), {
      grpcCode: err.code,
      cause: err,
    });
  }
  return new FlightError('UNKNOWN', cleanMessage(err && err.message), { cause: err });
}

/**
 * A Flight location as a gRPC target: grpc://, grpc+tcp://, grpc+tls:// or grpc+unix://.
 * Returns {target, tls} or null for arrow-flight-reuse-connection:// (the caller's channel).
 */
function parseLocation(location) {
  const match = /^([a-z0-9+.-]+):\/\/(.*)$/i.exec(String(location));
  if (!match) throw new FlightError('INVALID_ARGUMENT', `not a Flight location: ${location}`);
  const scheme = match[1].toLowerCase();
  const rest = match[2];
  if (scheme === 'arrow-flight-reuse-connection') return null;
  if (scheme === 'grpc' || scheme === 'grpc+tcp') return { target: rest.replace(/\/+$/, ''), tls: false };
  if (scheme === 'grpc+tls') return { target: rest.replace(/\/+$/, ''), tls: true };
  if (scheme === 'grpc+unix') return { target: `unix://${rest}`, tls: false };
  throw new FlightError('INVALID_ARGUMENT', `unsupported Flight location scheme: ${location}`);
}

/** Open channels by target, with the credentials and call metadata of one client. */
class Channels {
  constructor({ token, tlsRootCerts, certChain, privateKey, channelOptions } = {}) {
    this.token = token;
    this.tls = { tlsRootCerts, certChain, privateKey };
    this.channelOptions = {
      // Chip batches are far above gRPC's 4 MiB default.
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
      ...(channelOptions || {}),
    };
    this.clients = new Map();
  }

  /** Per-call metadata: the bearer token when there is one. */
  metadata() {
    const md = new grpc.Metadata();
    if (this.token) md.set('authorization', `Bearer ${this.token}`);
    return md;
  }

  credentials(tls) {
    if (!tls) return grpc.credentials.createInsecure();
    const asBuffer = (v) => (v == null ? null : Buffer.isBuffer(v) ? v : Buffer.from(v));
    return grpc.credentials.createSsl(
      asBuffer(this.tls.tlsRootCerts),
      asBuffer(this.tls.privateKey),
      asBuffer(this.tls.certChain),
    );
  }

  /** The FlightService client for a location (opened once). */
  get(location) {
    const parsed = parseLocation(location);
    if (parsed === null) throw new FlightError('INVALID_ARGUMENT', 'reuse-connection needs a default');
    const key = `${parsed.tls ? 'tls' : 'plain'}|${parsed.target}`;
    let client = this.clients.get(key);
    if (client === undefined) {
      const Service = flightService();
      client = new Service(parsed.target, this.credentials(parsed.tls), this.channelOptions);
      this.clients.set(key, client);
    }
    return client;
  }

  close() {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}

/** A unary call as a promise of its response, errors as FlightError. */
function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, (err, response) => {
      if (err) reject(toFlightError(err));
      else resolve(response);
    });
  });
}

/** A server-streaming call collected into an array, errors as FlightError. */
async function collect(client, method, request, metadata) {
  const call = client[method](request, metadata);
  const out = [];
  try {
    for await (const message of call) out.push(message);
  } catch (err) {
    throw toFlightError(err);
  }
  return out;
}

module.exports = {
  Channels,
  FlightError,
  cleanMessage,
  collect,
  flightService,
  parseLocation,
  toFlightError,
  unary,
};
