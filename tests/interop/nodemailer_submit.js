// Submits mail to Herald with nodemailer, as a Node app would, and prints one JSON line per
// step: what Herald answered. Run by tests/it/submission.rs.
//
//   node nodemailer_submit.js PORT CA_FILE KEY MODE   (MODE: starttls or implicit)
"use strict";
const fs = require("fs");
const nodemailer = require("nodemailer");

const [port, caFile, key, mode] = process.argv.slice(2);
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

(async () => {
  try {
    await transport("hk_wrongwrong_00000000000000000000000000000000").sendMail({
      from: "orders@acme.com",
      to: "ada@example.com",
      subject: "never",
      text: "never",
    });
    say("wrong_key", 250, "accepted?!");
  } catch (e) {
    say("wrong_key", e.responseCode, e.response);
  }
  const info = await transport(key).sendMail({
    from: '"Acme Café" <orders@acme.com>',
    to: "Ada Lovelace <ada@example.com>",
    cc: "bob@example.org",
    bcc: "audit@example.net",
    subject: "Ihre Bestellung – Grüße ✓",
    text: "Danke für Ihre Bestellung.",
    html: "<p>Danke für Ihre <b>Bestellung</b>.</p>",
    attachments: [{ filename: "rechnung.txt", content: "Rechnung 42" }],
    headers: { "X-Herald-Tags": "receipt,node", "X-Herald-Metadata-Order": "o-7" },
  });
  say("send", 250, info.response);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
