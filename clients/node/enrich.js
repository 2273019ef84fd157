#!/usr/bin/env node
// Enrich from Node.js, built from protos/enrich/v1/enrich.proto alone with @grpc/proto-loader.
//
//   node enrich.js photo.jpg                 one image (unary Enrich), JSON to stdout
//   node enrich.js photos/                   every image in a folder over one EnrichStream, JSON lines
//   node enrich.js --help
//   ENRICH_TARGET=host:50051 ENRICH_TOKEN=... node enrich.js --caption-mode skip photos/
//
// The same conventions as the Python client (enrich_contract/wire.py): the server is --target, else
// ENRICH_TARGET, else localhost:50051 (ENRICH_TOKEN: a bearer token; ENRICH_CA: TLS with that CA); a
// caption mode is one of generate, beam_search, template, skip (the proto's names, any case, with or
// without CAPTION_MODE_); output is protobuf's JSON mapping, as the HTTP API, grpcurl -emit-defaults and
// enrich-client write it: camelCase names (baseColour, articleType, productDisplayName), enums by name,
// 64-bit integers as strings, durations as "1.5s", every field present.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");
const LOADER_OPTIONS = {
  keepCase: false,  // camelCase names, as protobuf's JSON mapping has them (requests too: topK, requestId)
  longs: String,    // uint64 size_bytes as a string, as in the JSON mapping
  enums: String,    // "CAPTION_MODE_GENERATE", "IMAGE_UNDECODABLE" rather than numbers
  defaults: true,   // zero values present: status.code === 0 on success
  oneofs: true,
  includeDirs: [PROTOS],
};
const DEFINITION = protoLoader.loadSync(path.join(PROTOS, "enrich", "v1", "enrich.proto"), LOADER_OPTIONS);
const MAX_MESSAGE = 129 * 1024 * 1024; // what a server with default settings reads: twice its 64 MiB image limit, plus 1 MiB
const IMAGE_EXTENSIONS = new Set([".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".gif", ".tif", ".tiff", ".bmp"]);
const CAPTION_MODES = DEFINITION["enrich.v1.CaptionMode"].type.value
  .map((v) => v.name).filter((name) => name !== "CAPTION_MODE_UNSPECIFIED")
  .map((name) => name.replace(/^CAPTION_MODE_/, "").toLowerCase());
const USAGE = `usage: node enrich.js [--target HOST:PORT] [--caption-mode MODE] [--top-k N] [--include-palette]
                      [--include-signature] [--include-embedding] IMAGE|FOLDER

  IMAGE      one image over the unary Enrich call: its answer as JSON
  FOLDER     every image in it over one EnrichStream: one JSON line per answer
  --target   the server (default: ENRICH_TARGET, else localhost:50051)
  --caption-mode  ${CAPTION_MODES.join(", ")} (default: the server's, generate)
  --top-k    alternatives per attribute (default: the server's, 3)
  --include-palette, --include-signature, --include-embedding
             the answers carry the product's palette, the image's signature (perceptual hashes, colour
             fingerprint), its embedding (computed only when asked)

ENRICH_TOKEN sends a bearer token; ENRICH_CA connects with TLS, trusting that CA.`;

// A caption mode by the rule above, as the proto's enum name; throws naming the valid ones.
function captionMode(name) {
  if (name === undefined || name === null || name === "") return "CAPTION_MODE_UNSPECIFIED";
  const upper = String(name).trim().toUpperCase();
  const full = upper.startsWith("CAPTION_MODE_") ? upper : `CAPTION_MODE_${upper}`;
  if (full !== "CAPTION_MODE_UNSPECIFIED" && CAPTION_MODES.includes(full.replace(/^CAPTION_MODE_/, "").toLowerCase())) {
    return full;
  }
  throw new Error(`caption mode ${JSON.stringify(name)} is not one of ${CAPTION_MODES.join(", ")}`);
}

function enrichClient(target = process.env.ENRICH_TARGET || "localhost:50051") {
  const { Enrich } = grpc.loadPackageDefinition(DEFINITION).enrich.v1;
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

// The request's include_* flags (protobuf's JSON names), as the command line and the options name them.
const INCLUDE_FLAGS = ["includeEmbedding", "includePalette", "includeSignature"];

function request(requestId, image, options = {}) {
  const message = { requestId, image, topK: options.topK || 0, captionMode: captionMode(options.captionMode) };
  for (const flag of INCLUDE_FLAGS) message[flag] = Boolean(options[flag]);
  return message;
}

// --- protobuf's JSON mapping -------------------------------------------------------------------------
// float32 as the shortest decimal that reads back to the same float32 (as protobuf's own JSON printers do).
function shortestFloat32(value) {
  if (!Number.isFinite(value)) return String(value);
  for (let digits = 6; digits < 10; digits += 1) {
    const rounded = Number(value.toPrecision(digits));
    if (Math.fround(rounded) === Math.fround(value)) return rounded;
  }
  return value;
}

function durationJson({ seconds, nanos }) {
  const whole = `${seconds}`;
  if (!nanos) return `${whole}s`;
  const fraction = String(nanos).padStart(9, "0").replace(/(000)+$/, "");
  return `${whole}.${fraction}s`;
}

function fieldJson(value, field, scope) {
  if (field.type === "TYPE_FLOAT") return shortestFloat32(value);
  if (field.type !== "TYPE_MESSAGE") return value;
  const typeName = resolve(field.typeName, scope);
  if (typeName === "google.protobuf.Duration") return durationJson(value);
  return typeName ? toJson(value, typeName) : value; // a map arrives as a plain object already
}

function resolve(typeName, scope) {
  for (const candidate of [typeName, `${scope}.${typeName}`, `enrich.v1.${typeName}`]) {
    if (DEFINITION[candidate] && DEFINITION[candidate].type && DEFINITION[candidate].type.field) return candidate;
  }
  return null;
}

// A decoded message as protobuf's JSON mapping: unset messages left out, every other field present.
function toJson(message, typeName = "enrich.v1.EnrichResponse") {
  const out = {};
  for (const field of DEFINITION[typeName].type.field) {
    const value = message[field.name];
    if (value === null || value === undefined) continue;
    if (field.label === "LABEL_REPEATED") { // a list, or a map (a plain object of strings here)
      out[field.name] = Array.isArray(value) ? value.map((v) => fieldJson(v, field, typeName)) : value;
    } else {
      out[field.name] = fieldJson(value, field, typeName);
    }
  }
  return out;
}

// --- calls ---------------------------------------------------------------------------------------------
// One image; resolves to the EnrichResponse, rejects with the gRPC error (code, details).
function enrichFile(client, file, options = {}) {
  const { timeoutSeconds = 60 } = options;
  const message = request(path.basename(file), fs.readFileSync(file), options);
  return new Promise((resolve_, reject) => {
    client.Enrich(message, callMetadata(), { deadline: Date.now() + timeoutSeconds * 1000 },
      (error, response) => (error ? reject(error) : resolve_(response)));
  });
}

// Every image file in a folder over one stream; calls onAnswer for each answer as it arrives
// (a bad image is an answer with status.code !== 0, never an error of the whole stream).
function enrichFolder(client, folder, onAnswer, options = {}) {
  const files = fs.readdirSync(folder).filter((name) => IMAGE_EXTENSIONS.has(path.extname(name).toLowerCase()))
    .sort();
  captionMode(options.captionMode); // a wrong name fails before the stream opens
  return new Promise((resolve_, reject) => {
    const stream = client.EnrichStream(callMetadata());
    let answered = 0;
    stream.on("data", (answer) => { answered += 1; onAnswer(answer); });
    stream.on("error", reject);
    stream.on("end", () => resolve_({ sent: files.length, answered }));
    for (const name of files) {
      stream.write(request(name, fs.readFileSync(path.join(folder, name)), options));
    }
    stream.end();
  });
}

function parseArguments(argv) {
  const options = { targets: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const argument = argv[i];
    if (argument === "-h" || argument === "--help") options.help = true;
    else if (argument === "--caption-mode") options.captionMode = argv[++i];
    else if (argument === "--top-k") options.topK = Number(argv[++i]);
    else if (argument === "--target") options.target = argv[++i];
    else if (INCLUDE_FLAGS.some((flag) => argument === `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`)) {
      options[argument.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = true;
    }
    else if (argument.startsWith("-")) throw new Error(`unknown option ${argument}`);
    else options.targets.push(argument);
  }
  if (!options.help && options.targets.length !== 1) throw new Error("give one image or folder");
  if (options.topK !== undefined && !(Number.isInteger(options.topK) && options.topK > 0)) {
    throw new Error("--top-k must be a whole number above 0");
  }
  captionMode(options.captionMode);
  return options;
}

async function main(argv) {
  let options;
  try {
    options = parseArguments(argv);
  } catch (error) {
    console.error(`enrich: ${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (options.help) {
    console.log(USAGE);
    return 0;
  }
  const client = enrichClient(options.target);
  try {
    if (fs.statSync(options.targets[0]).isDirectory()) {
      let failed = 0;
      const { answered } = await enrichFolder(client, options.targets[0], (answer) => {
        if (answer.status.code !== 0) failed += 1;
        process.stdout.write(JSON.stringify(toJson(answer)) + "\n");
      }, options);
      console.error(`${answered - failed} enriched, ${failed} failed`);
      return failed ? 1 : 0;
    }
    const response = await enrichFile(client, options.targets[0], options);
    process.stdout.write(JSON.stringify(toJson(response), null, 2) + "\n");
    return 0;
  } catch (error) {
    console.error(`enrich: ${grpc.status[error.code] || "ERROR"}: ${error.details || error.message}`);
    return 1;
  } finally {
    client.close();
  }
}

module.exports = { enrichClient, enrichFile, enrichFolder, captionMode, toJson, CAPTION_MODES, LOADER_OPTIONS };

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}
