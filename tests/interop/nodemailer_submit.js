// Submits mail to Herald with nodemailer, as a Node app would, and prints one JSON line per
// step: what Herald answered. Run by tests/it/submission.rs, which checks every client the
// same way (see `check_client` there).
//
//   node nodemailer_submit.js PORT CA_FILE KEY RATE_KEY MODE   (MODE: starttls or implicit)
"use strict";
const fs = require("fs");
const nodemailer = require("nodemailer");

const [port, caFile, key, rateKey, mode] = process.argv.slice(2);
const transport = (pass) =>
  nodemailer.createTransport({
    host: "localhost",
    port: Number(port),
    secure: mode === "implicit",
    requireTLS: mode !== "implicit",
    tls: { ca: fs.readFileSync(caFile) },
    auth: { user: "app", pass },
  });
const say = (step, code, text) => console.log(JSON.stringify({ step, code, text }));

async function send(step, pass, message) {
  try {
    const info = await transport(pass).sendMail(message);
    say(step, 250, info.response);
  } catch (e) {
    say(step, e.responseCode, e.response);
  }
}

(async () => {
  await send("wrong_key", "hk_wrongwrong_00000000000000000000000000000000", {
    from: "orders@acme.com",
    to: "ada@example.com",
    subject: "never",
    text: "never",
  });
  await send("plain", key, {
    from: "orders@acme.com",
    to: "ada@example.com",
    subject: "Plain from nodemailer",
    text: "Your order has shipped.\n.a line that starts with a dot\n",
  });
  await send("rich", key, {
    from: '"Acme Café" <orders@acme.com>',
    to: "Ada <ada@example.com>",
    cc: "bob@example.org",
    bcc: "audit@example.net",
    subject: "Your receipt — №42 ✓",
    text: "Thanks for your order, Ada.",
    html: "<p>Thanks for your <b>order</b>, Ada.</p>",
    attachments: [{ filename: "receipt.pdf", content: Buffer.from("%PDF-1.4 receipt") }],
    headers: { "X-Herald-Tags": "receipt, nodemailer", "X-Herald-Metadata-Order-Id": "o-42" },
  });
  // Over the test's 64 KiB limit: refused with 552 5.3.4.
  await send("too_big", key, {
    from: "orders@acme.com",
    to: "ada@example.com",
    subject: "big",
    text: ("x".repeat(900) + "\n").repeat(100),
  });
  await send("rate", rateKey, {
    from: "orders@acme.com",
    to: "ada@example.com",
    subject: "Plain from nodemailer",
    text: "Your order has shipped.",
  });
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
