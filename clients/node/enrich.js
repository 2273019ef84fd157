#!/usr/bin/env node
// Enrich from Node.js, built from protos/enrich/v1/enrich.proto alone with @grpc/proto-loader.
//
//   node enrich.js photo.jpg                 one image (unary Enrich), JSON to stdout
//   node enrich.js photos/                   every image in a folder over one EnrichStream, JSON lines
//   ENRICH_TARGET=host:50051 ENRICH_TOKEN=... node enrich.js --caption skip photos/
//
// The loader options matter: with proto-loader's defaults, snake_case request fields (top_k,
// request_id) are silently dropped, an OK item has no status.code (proto3 omits zeros), 64-bit
// sizes arrive as Long objects and enums as numbers. LOADER_OPTIONS below avoids all four.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");
const LOADER_OPTIONS = {
  keepCase: true,   // field names as in the .proto: top_k, request_id, article_type
  longs: Number,    // uint64 size_bytes as a number (sizes stay far below 2^53)
  enums: String,    // "CAPTION_MODE_GENERATE", "IMAGE_UNDECODABLE" rather than numbers
  defaults: true,   // zero values present: status.code === 0 on success
  oneofs: true,
  includeDirs: [PROTOS],
};
const MAX_MESSAGE = 65 * 1024 * 1024; // the server's default image limit (64 MiB) plus room
const IMAGE_EXTENSIONS = new Set([".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".gif", ".tif", ".tiff", ".bmp"]);

function enrichClient(target = process.env.ENRICH_TARGET || "localhost:50051") {
  const definition = protoLoader.loadSync(path.join(PROTOS, "enrich", "v1", "enrich.proto"), LOADER_OPTIONS);
  const { Enrich } = grpc.loadPackageDefinition(definition).enrich.v1;
  const credentials = process.env.ENRICH_CA
    ? grpc.credentials.createSsl(fs.readFileSync(process.env.ENRICH_CA))
    : grpc.credentials.createInsecure();
  return new Enrich(target, credentials, {
    "grpc.max_send_message_length": MAX_MESSAGE,
    "grpc.max_receive_message_length": MAX_MESSAGE,
  });
}

function callMetadata() {
  const metadata = new grpc.Metadata();
  if (process.env.ENRICH_TOKEN) metadata.set("authorization", `Bearer ${process.env.ENRICH_TOKEN}`);
  return metadata;
}

function captionMode(name) {
  return `CAPTION_MODE_${name.toUpperCase().replace("-", "_")}`;
}

// One image; resolves to the EnrichResponse, rejects with the gRPC error (code, details).
function enrichFile(client, file, { caption = "generate", topK = 3, timeoutSeconds = 60 } = {}) {
  const request = { request_id: path.basename(file), image: fs.readFileSync(file), top_k: topK,
                    caption_mode: captionMode(caption) };
  return new Promise((resolve, reject) => {
    client.Enrich(request, callMetadata(), { deadline: Date.now() + timeoutSeconds * 1000 },
      (error, response) => (error ? reject(error) : resolve(response)));
  });
}

// Every image file in a folder over one stream; calls onAnswer for each answer as it arrives
// (a bad image is an answer with status.code !== 0, never an error of the whole stream).
function enrichFolder(client, folder, onAnswer, { caption = "generate", topK = 3 } = {}) {
  const files = fs.readdirSync(folder).filter((name) => IMAGE_EXTENSIONS.has(path.extname(name).toLowerCase()))
    .sort();
  return new Promise((resolve, reject) => {
    const stream = client.EnrichStream(callMetadata());
    let answered = 0;
    stream.on("data", (answer) => { answered += 1; onAnswer(answer); });
    stream.on("error", reject);
    stream.on("end", () => resolve({ sent: files.length, answered }));
    for (const name of files) {
      stream.write({ request_id: name, image: fs.readFileSync(path.join(folder, name)), top_k: topK,
                     caption_mode: captionMode(caption) });
    }
    stream.end();
  });
}

async function main(argv) {
  let caption = "generate";
  const targets = [];
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--caption") caption = argv[++i];
    else if (argv[i] === "--target") process.env.ENRICH_TARGET = argv[++i];
    else targets.push(argv[i]);
  }
  if (targets.length !== 1) {
    console.error("usage: node enrich.js [--target HOST:PORT] [--caption generate|beam-search|template|skip] IMAGE|FOLDER");
    return 2;
  }
  const client = enrichClient();
  try {
    if (fs.statSync(targets[0]).isDirectory()) {
      let failed = 0;
      const { answered } = await enrichFolder(client, targets[0], (answer) => {
        if (answer.status.code !== 0) failed += 1;
        process.stdout.write(JSON.stringify(answer) + "\n");
      }, { caption });
      console.error(`${answered - failed} enriched, ${failed} failed`);
      return failed ? 1 : 0;
    }
    const response = await enrichFile(client, targets[0], { caption });
    process.stdout.write(JSON.stringify(response, null, 2) + "\n");
    return 0;
  } catch (error) {
    console.error(`enrich: ${grpc.status[error.code] || "ERROR"}: ${error.details || error.message}`);
    return 1;
  } finally {
    client.close();
  }
}

module.exports = { enrichClient, enrichFile, enrichFolder, LOADER_OPTIONS };

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}
