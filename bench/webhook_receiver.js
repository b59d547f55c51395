// A webhook consumer for the throughput bench: verifies every request's Standard Webhooks
// signature, counts the events once each (by endpoint path and webhook-id), and times each
// from its event's `timestamp` to its arrival.
//
//   node bench/webhook_receiver.js <port> <secrets-file> [slow-path:ms] [down-path]
//
// The secrets file has a line "<path> whsec_…" per endpoint; it is read at the first request
// (the bench writes it once the endpoints exist). A request to the slow path is answered after
// that many milliseconds; the down path answers 503 to everything. GET /count answers the
// distinct events the other paths (the healthy endpoints) received so far; SIGTERM prints a
// JSON summary on stdout and exits: the healthy endpoints' figures, and what the slow and the
// down ones were sent.
"use strict";
const http = require("http");
const crypto = require("crypto");
const fs = require("fs");

const [port, secretFile, slowArg, downPath] = process.argv.slice(2);
const [slowPath, slowMs] = slowArg ? slowArg.split(":") : [null, "0"];
let keys = null;
const seen = new Set();
const lags = [];
let requests = 0, bad = 0, first = null, last = null;
const slow = { requests: 0, in_flight: 0, max_in_flight: 0 };
const down = { requests: 0 };

function keyFor(path) {
  if (keys === null) {
    keys = new Map();
    for (const line of fs.readFileSync(secretFile, "utf8").split("\n")) {
      const [p, secret] = line.trim().split(/\s+/);
      if (p && secret) keys.set(p, Buffer.from(secret.replace(/^whsec_/, ""), "base64"));
    }
  }
  return keys.get(path);
}

function verify(path, headers, body) {
  const key = keyFor(path);
  const id = headers["webhook-id"], ts = headers["webhook-timestamp"];
  const sigs = (headers["webhook-signature"] || "").split(" ");
  if (!key || !id || !ts) return false;
  const mac = crypto.createHmac("sha256", key).update(`${id}.${ts}.`).update(body).digest("base64");
  return sigs.some((s) => s === `v1,${mac}`);
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/count") {
    res.end(String(seen.size));
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const now = Date.now();
    const body = Buffer.concat(chunks);
    requests++;
    if (!verify(req.url, req.headers, body)) {
      bad++;
      res.statusCode = 401;
      res.end("bad signature");
      return;
    }
    if (req.url === downPath) {
      down.requests++;
      res.statusCode = 503;
      res.end("down");
      return;
    }
    if (req.url === slowPath) {
      slow.requests++;
      slow.in_flight++;
      slow.max_in_flight = Math.max(slow.max_in_flight, slow.in_flight);
      setTimeout(() => {
        slow.in_flight--;
        res.end("ok");
      }, Number(slowMs));
      return;
    }
    const id = `${req.url} ${req.headers["webhook-id"]}`;
    if (!seen.has(id)) {
      seen.add(id);
      const event = JSON.parse(body);
      lags.push(now - Date.parse(event.timestamp));
      if (first === null) first = now;
      last = now;
    }
    res.end("ok");
  });
});
server.keepAliveTimeout = 60000;
server.listen(Number(port), "127.0.0.1");

process.on("SIGTERM", () => {
  lags.sort((a, b) => a - b);
  const q = (p) => (lags.length ? lags[Math.min(lags.length - 1, Math.floor(p * lags.length))] : null);
  const span = first !== null && last > first ? (last - first) / 1000 : null;
  const cpu = process.cpuUsage();
  process.stdout.write(JSON.stringify({
    events: seen.size, requests, bad_signatures: bad,
    events_per_s: span ? Math.round(seen.size / span) : null,
    first_s: first !== null ? first / 1000 : null,
    cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
    lag_p50_ms: q(0.5), lag_p99_ms: q(0.99), lag_max_ms: lags.length ? lags[lags.length - 1] : null,
    slow: slowPath ? slow : null, down: downPath ? down : null,
  }) + "\n");
  process.exit(0);
});
