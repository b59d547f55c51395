// A webhook consumer for the throughput bench: verifies every request's Standard Webhooks
// signature, counts the events once each (by webhook-id), and times each from its event's
// `timestamp` to its arrival.
//
//   node bench/webhook_receiver.js <port> <secret-file>
//
// The secret (`whsec_…`) is read from the file at the first request (the bench writes it once
// the endpoint exists). GET /count answers the distinct events received so far; SIGTERM
// prints a JSON summary on stdout and exits.
"use strict";
const http = require("http");
const crypto = require("crypto");
const fs = require("fs");

const [port, secretFile] = process.argv.slice(2);
let key = null;
const seen = new Set();
const lags = [];
let requests = 0, bad = 0, first = null, last = null;

function verify(headers, body) {
  if (key === null) {
    const secret = fs.readFileSync(secretFile, "utf8").trim();
    key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  }
  const id = headers["webhook-id"], ts = headers["webhook-timestamp"];
  const sigs = (headers["webhook-signature"] || "").split(" ");
  if (!id || !ts) return false;
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
    if (!verify(req.headers, body)) {
      bad++;
      res.statusCode = 401;
      res.end("bad signature");
      return;
    }
    const id = req.headers["webhook-id"];
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
  process.stdout.write(JSON.stringify({
    events: seen.size, requests, bad_signatures: bad,
    events_per_s: span ? Math.round(seen.size / span) : null,
    cpu_ms: Math.round((process.cpuUsage().user + process.cpuUsage().system) / 1000),
    lag_p50_ms: q(0.5), lag_p99_ms: q(0.99), lag_max_ms: lags.length ? lags[lags.length - 1] : null,
  }) + "\n");
  process.exit(0);
});
