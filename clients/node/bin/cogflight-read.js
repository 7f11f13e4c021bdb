#!/usr/bin/env node
'use strict';
/**
 * Read a query's chips and print one JSON line per chip, then a summary line:
 *
 *   node bin/cogflight-read.js --location grpc://127.0.0.1:8815 --query '<json>' \
 *       [--shards N] [--token T] [--tls-root-certs ca.pem] [--tls-cert c.pem --tls-key k.pem]
 *
 *   {"id": ..., "geometry_index": ..., "ordinal": ..., "shape": [...], "dtype": "uint16",
 *    "sum": "<sum of the pixel values, decimal>", "valid": <valid pixels>, "endpoint": k}
 *   {"summary": {"endpoints": n, "chips": m, "sum": "...", "copied_bodies": c, "bodies": b}}
 *
 * Any error prints {"error": {"code": ..., "message": ...}} and exits with status 1.
 */

const fs = require('node:fs');
const { connect, halfToNumber, stats } = require('../src/index');

// grpc-js sends the target host as TLS SNI even when it is an IP address
// (grpc/grpc-node#1919), and Node warns once (DEP0123) though the connection is fine.
// This command keeps stderr for real problems; a library must not do this for its users.
const emitWarning = process.emitWarning;
process.emitWarning = function filtered(warning, ...rest) {
  const code = rest[0] && typeof rest[0] === 'object' ? rest[0].code : rest[1];
  if (code === 'DEP0123') return undefined;
  return emitWarning.call(process, warning, ...rest);
};

const USAGE = 'usage: cogflight-read.js --location URI --query JSON [--shards N] [--token T] '
  + '[--tls-root-certs FILE] [--tls-cert FILE --tls-key FILE]';

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const key = { '--location': 'location', '--query': 'query', '--shards': 'shards',
      '--token': 'token', '--tls-root-certs': 'tlsRootCerts', '--tls-cert': 'certChain',
      '--tls-key': 'privateKey' }[arg];
    if (key === undefined || i + 1 >= argv.length) {
      const err = new Error(`${arg}: unknown or missing value; ${USAGE}`);
      err.code = 'INVALID_ARGUMENT';
      throw err;
    }
    out[key] = argv[i + 1];
    i += 1;
  }
  if (!out.location || !out.query) {
    const err = new Error(USAGE);
    err.code = 'INVALID_ARGUMENT';
    throw err;
  }
  return out;
}

/** The sum of a chip's pixel values as a decimal string (exact for integers). */
function pixelSum(values, dtype) {
  if (dtype === 'float16') {
    let total = 0;
    for (let i = 0; i < values.length; i += 1) total += halfToNumber(values[i]);
    return String(total);
  }
  if (values instanceof BigInt64Array || values instanceof BigUint64Array) {
    let total = 0n;
    for (const v of values) total += v;
    return total.toString();
  }
  if (values instanceof Float32Array || values instanceof Float64Array) {
    let total = 0;
    for (const v of values) total += v;
    return String(total);
  }
  // Integers up to 32 bits: exact in a double while the running total stays below 2**53.
  let total = 0n;
  let part = 0;
  for (let i = 0; i < values.length; i += 1) {
    part += values[i];
    if (part > 9e15) { total += BigInt(part); part = 0; }
  }
  return (total + BigInt(part)).toString();
}

function countValid(valid) {
  if (!valid) return null;
  let n = 0;
  for (let i = 0; i < valid.length; i += 1) n += valid[i] ? 1 : 0;
  return n;
}

async function main() {
  // A reader that stops early (`| head`) is not an error.
  process.stdout.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  const args = parseArgs(process.argv.slice(2));
  const file = (name) => (name ? fs.readFileSync(name) : undefined);
  const client = connect(args.location, {
    token: args.token,
    tlsRootCerts: file(args.tlsRootCerts),
    certChain: file(args.certChain),
    privateKey: file(args.privateKey),
  });
  try {
    const plan = await client.plan(args.query,
      { shards: args.shards === undefined ? undefined : Number(args.shards) });
    let chips = 0;
    let total = 0n;
    for (const [k, endpoint] of plan.endpoints.entries()) {
      for await (const chip of client.readEndpoint(endpoint)) {
        const sum = pixelSum(chip.data, chip.dtype);
        if (!sum.includes('.') && !sum.includes('e')) total += BigInt(sum);
        chips += 1;
        process.stdout.write(`${JSON.stringify({
          id: chip.id, geometry_index: chip.geometryIndex, ordinal: chip.ordinal,
          datetime: chip.datetime, shape: chip.shape, dtype: chip.dtype, sum,
          valid: countValid(chip.valid), endpoint: k,
        })}\n`);
      }
    }
    process.stdout.write(`${JSON.stringify({ summary: {
      endpoints: plan.endpoints.length, chips, total_records: plan.totalRecords,
      sum: total.toString(), bodies: stats.bodies, copied_bodies: stats.copiedBodies,
    } })}\n`);
  } finally {
    client.close();
  }
}

main().catch((err) => {
  process.stdout.write(`${JSON.stringify({ error: {
    code: typeof err.code === 'string' ? err.code : 'UNKNOWN', message: err.message,
  } })}\n`);
  process.exitCode = 1;
});
