#!/usr/bin/env node
'use strict';
/**
 * Chips/s of this client on one query, read endpoint after endpoint as `chips()` does:
 *
 *   node bench/throughput.js grpc://127.0.0.1:8815 '<query json>' [shards=4] [reps=4]
 *
 * Prints one JSON line per repetition (the first is usually cold: connections, JIT).
 */

const { connect, stats } = require('../src/index');

async function main() {
  const [location, query, shards = '4', reps = '4'] = process.argv.slice(2);
  const client = connect(location);
  try {
    for (let rep = 0; rep < Number(reps); rep += 1) {
      const start = process.hrtime.bigint();
      let chips = 0;
      let bytes = 0;
      for await (const chip of client.chips(JSON.parse(query), { shards: Number(shards) })) {
        chips += 1;
        bytes += chip.data.byteLength;
      }
      const s = Number(process.hrtime.bigint() - start) / 1e9;
      process.stdout.write(`${JSON.stringify({ rep, chips, mb: +(bytes / 1e6).toFixed(1),
        seconds: +s.toFixed(3), chips_per_s: Math.round(chips / s),
        copied_bodies: stats.copiedBodies, bodies: stats.bodies })}\n`);
    }
  } finally {
    client.close();
  }
}

main().catch((err) => {
  process.stdout.write(`${JSON.stringify({ error: { code: err.code, message: err.message } })}\n`);
  process.exitCode = 1;
});
