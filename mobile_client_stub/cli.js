#!/usr/bin/env node
// Command line for app developers: the app's own call, and the v1 API, against a BraNet service.
//   node mobile_client_stub/cli.js analyze IMAGE --modality ultrasound --roi
// See `node mobile_client_stub/cli.js help`.
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { parseArgs } from "node:util";

import { BraNetApiError, createClient, extensionOf } from "./client.js";

const USAGE = `usage: node mobile_client_stub/cli.js COMMAND [ARGS] [--url URL] [--token ID_TOKEN]

  analyze IMAGE [--modality ultrasound|mammography] [--roi] [--v1]
        the app's call (POST /evaluate-image/<modality>/?extract_roi=...), then the stored analysis
        (GET /v1/analyses/<idResult>); --v1 calls POST /v1/analyses instead
  history [--limit N] [--offset N]      the caller's analyses, newest first
  show ID                               one analysis
  delete ID                             soft delete, as the app does
  feedback ID --label normal|benign|malignant [--comment TEXT]
  health                                liveness and the service's auth mode

The service is --url, else $BRANET_API_URL, else http://127.0.0.1:8080. The Firebase ID token is
--token, else $BRANET_ID_TOKEN (not needed in local single-user mode). Output is JSON on stdout;
exit status 0 on success, 1 when the service refused (the envelope or error is printed), 2 on usage.`;

const OPTIONS = {
  url: { type: "string" },
  token: { type: "string" },
  modality: { type: "string", default: "ultrasound" },
  roi: { type: "boolean", default: false },
  v1: { type: "boolean", default: false },
  limit: { type: "string", default: "20" },
  offset: { type: "string", default: "0" },
  label: { type: "string" },
  comment: { type: "string", default: "" },
  help: { type: "boolean", short: "h", default: false },
};

function print(value) {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function usage(message) {
  if (message) process.stderr.write(`${message}\n`);
  process.stderr.write(`${USAGE}\n`);
  return 2;
}

async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    return usage(error.message);
  }
  const { values, positionals } = parsed;
  const [command, argument] = positionals;
  if (values.help || !command || command === "help") return usage();
  const token = values.token || process.env.BRANET_ID_TOKEN || null;
  const client = createClient({
    baseUrl: values.url || process.env.BRANET_API_URL || "http://127.0.0.1:8080",
    getIdToken: async () => token,
  });

  switch (command) {
    case "analyze": {
      if (!argument) return usage("analyze needs an IMAGE");
      const file = { bytes: await readFile(argument), ext: extensionOf(basename(argument)) };
      if (values.v1) {
        print(await client.analyze({ file, modality: values.modality, extractRoi: values.roi }));
        return 0;
      }
      const { status, envelope } = await client.evaluateImage({ file, modality: values.modality, extractRoi: values.roi });
      if (envelope.result !== "OK") {
        print({ status, envelope });
        return 1;
      }
      // The app reads the result from its store; the v1 API serves the same record.
      print({ status, envelope, analysis: await client.getAnalysis(envelope.idResult) });
      return 0;
    }
    case "history":
      print(await client.listAnalyses({ limit: Number(values.limit), offset: Number(values.offset) }));
      return 0;
    case "show":
      if (!argument) return usage("show needs an ID");
      print(await client.getAnalysis(argument));
      return 0;
    case "delete":
      if (!argument) return usage("delete needs an ID");
      await client.deleteAnalysis(argument);
      print({ deleted: argument });
      return 0;
    case "feedback":
      if (!argument || !values.label) return usage("feedback needs an ID and --label");
      print(await client.sendFeedback(argument, { label: values.label, comment: values.comment }));
      return 0;
    case "health":
      print(await client.health());
      return 0;
    default:
      return usage(`unknown command: ${command}`);
  }
}

main(process.argv.slice(2)).then(
  (status) => { process.exitCode = status; },
  (error) => {
    if (error instanceof BraNetApiError) {
      print({ error: { status: error.status, code: error.code, message: error.message, details: error.details } });
      process.exitCode = 1;
    } else {
      process.stderr.write(`${error.message}\n`);
      process.exitCode = error instanceof TypeError ? 2 : 1;
    }
  },
);
