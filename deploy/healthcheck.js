#!/usr/bin/env node
'use strict';
/*
 * Container health probe for compose (Kubernetes uses its native gRPC and HTTP
 * probes instead). It loads no keymesh code, so a probe never emits a trace.
 *
 *   node deploy/healthcheck.js grpc 127.0.0.1:50052 [service]   grpc.health.v1.Health/Check is SERVING
 *   node deploy/healthcheck.js http http://127.0.0.1:8080/readyz  the URL answers 2xx
 *
 * Exit status 0 when healthy, 1 otherwise (with the reason on stderr).
 */
const TIMEOUT_MS = 2500;
const [kind, target, service = ''] = process.argv.slice(2);

function fail(why) {
  process.stderr.write(`unhealthy: ${why}\n`);
  process.exit(1);
}

function checkHttp(url) {
  fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) }).then(
    (res) => (res.ok ? process.exit(0) : fail(`${url} answered ${res.status}`)),
    (err) => fail(`${url}: ${err.message}`),
  );
}

// HealthCheckRequest { string service = 1; } and HealthCheckResponse
// { ServingStatus status = 1; } are encoded by hand: one field each.
function encodeRequest(name) {
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length === 0) return Buffer.alloc(0);
  if (bytes.length > 127) fail('service name too long');
  return Buffer.concat([Buffer.from([0x0a, bytes.length]), bytes]);
}

function statusOf(response) {
  let status = 0; // UNKNOWN (the proto3 default, absent from the wire)
  for (let i = 0; i < response.length; ) {
    const tag = response[i++];
    if (tag === 0x08) {
      let value = 0;
      let shift = 0;
      let byte;
      do {
        byte = response[i++];
        value |= (byte & 0x7f) << shift;
        shift += 7;
      } while (byte & 0x80 && i < response.length);
      status = value;
    } else {
      break; // no other field is expected
    }
  }
  return status;
}

function checkGrpc(address) {
  const grpc = require('@grpc/grpc-js');
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  client.makeUnaryRequest(
    '/grpc.health.v1.Health/Check',
    (b) => b,
    (b) => b,
    encodeRequest(service),
    new grpc.Metadata(),
    { deadline: Date.now() + TIMEOUT_MS },
    (err, response) => {
      client.close();
      if (err) return fail(`${address}: ${err.message}`);
      const status = statusOf(response);
      return status === 1 ? process.exit(0) : fail(`${address}: status ${status} (1 is SERVING)`);
    },
  );
}

if (kind === 'http' && target) checkHttp(target);
else if (kind === 'grpc' && target) checkGrpc(target);
else fail('usage: healthcheck.js grpc HOST:PORT [SERVICE] | http URL');
