// `node --test mobile_client_stub`: the client against a live BraNet service ($BRANET_API_URL, or
// one started by live_service.js), and the exact bytes of the app's request on the wire.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";

import { BraNetApiError, createClient, extensionOf, modalityFromTitle } from "./client.js";
import { REPO, sharedData, startService } from "./live_service.js";

const run = promisify(execFile);
const CLASSES = ["normal", "benign", "malignant"];
const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const IMAGE = join(sharedData(), "busbra", "images", "bus_0002-l.png");
const OTHER_IMAGE = join(sharedData(), "busbra", "images", "bus_0003-l.png");

describe("the app's request on the wire", () => {
  let server;
  let received;
  let url;

  before(async () => {
    server = createServer((request, response) => {
      const chunks = [];
      request.on("data", (chunk) => chunks.push(chunk));
      request.on("end", () => {
        received = { method: request.method, url: request.url, headers: request.headers, body: Buffer.concat(chunks) };
        response.writeHead(200, { "Content-Type": "application/json" });
        response.end(JSON.stringify({ result: "OK", aditionalInfo: null, idResult: "abc" }));
      });
    });
    await new Promise((ready) => server.listen(0, "127.0.0.1", ready));
    url = `http://127.0.0.1:${server.address().port}`;
  });
  after(() => new Promise((closed) => server.close(closed)));

  test("legacy route, trailing slash, extract_roi, one `file` part image.png, force-refreshed bearer token", async () => {
    const refreshes = [];
    let issued = 0;
    const client = createClient({ baseUrl: `${url}/`, getIdToken: async (force) => { refreshes.push(force); issued += 1; return `token-${issued}`; } });
    const bytes = await readFile(IMAGE);
    const answer = await client.evaluateImage({ file: { bytes, ext: "png" }, modality: "Ultrasound", extractRoi: true });
    assert.deepEqual(answer, { status: 200, envelope: { result: "OK", aditionalInfo: null, idResult: "abc" } });
    assert.equal(received.method, "POST");
    assert.equal(received.url, "/evaluate-image/ultrasound/?extract_roi=true");
    assert.equal(received.headers.authorization, "Bearer token-1");
    assert.deepEqual(refreshes, [true]);
    const boundary = /^multipart\/form-data; boundary=(.+)$/.exec(received.headers["content-type"])?.[1];
    assert.ok(boundary, received.headers["content-type"]);
    const body = received.body.toString("latin1");
    const parts = body.split(`--${boundary}`).slice(1, -1);
    assert.equal(parts.length, 1, "exactly one part");
    const [head, ...rest] = parts[0].split("\r\n\r\n");
    assert.match(head, /Content-Disposition: form-data; name="file"; filename="image.png"/);
    assert.match(head, /Content-Type: image\/png/);
    const content = Buffer.from(rest.join("\r\n\r\n").replace(/\r\n$/, ""), "latin1");
    assert.ok(content.equals(bytes), "the file's bytes, unchanged");

    await client.evaluateImage({ file: { bytes, ext: "jpeg" }, modality: modalityFromTitle("Mammography"), extractRoi: false });
    assert.equal(received.url, "/evaluate-image/mammography/?extract_roi=false");
    assert.equal(received.headers.authorization, "Bearer token-2", "a fresh token for each request");
    assert.match(received.body.toString("latin1"), /filename="image.jpeg"\r\nContent-Type: image\/jpeg/);
  });

  test("React Native's FormData file object {uri, name, type}", () => {
    const appended = [];
    const original = globalThis.FormData;
    globalThis.FormData = class { append(...args) { appended.push(args); } };
    try {
      const client = createClient({ baseUrl: url, fetch: async () => new Response("{}") });
      return client.evaluateImage({ file: { uri: "file:///photos/IMG_1.JPG" }, modality: "ultrasound" }).then(() => {
        assert.deepEqual(appended, [["file", { uri: "file:///photos/IMG_1.JPG", name: "image.jpg", type: "image/jpg" }]]);
      });
    } finally {
      globalThis.FormData = original;
    }
  });

  test("modality and extension rules of the app", () => {
    assert.equal(modalityFromTitle("Ultrasonido"), "ultrasound");
    assert.equal(modalityFromTitle("Mamografía"), "mammography");
    assert.equal(extensionOf("photo.PNG"), "png");
    assert.equal(extensionOf("image/jpeg"), "jpeg");
    assert.throws(() => extensionOf("scan.gif"), TypeError);
  });
});

describe("against the live service", () => {
  let service;
  let client;
  let image;

  before(async () => {
    service = await startService();
    client = createClient({ baseUrl: service.url, getIdToken: async () => "ignored-in-local-mode" });
    image = await readFile(IMAGE);
  }, { timeout: 300_000 });
  after(async () => service && service.stop(), { timeout: 60_000 });

  test("health says local single-user mode", async () => {
    const health = await client.health();
    assert.equal(health.status, "ok");
    assert.equal(health.auth_mode, "local");
  });

  test("the app's call stores an analysis the v1 API serves", async () => {
    const { status, envelope } = await client.evaluateImage({ file: { bytes: image, ext: "png" }, modality: "ultrasound" });
    assert.equal(status, 200);
    assert.deepEqual(Object.keys(envelope).sort(), ["aditionalInfo", "idResult", "result"]);
    assert.equal(envelope.result, "OK");
    assert.equal(envelope.aditionalInfo, null);
    const analysis = await client.getAnalysis(envelope.idResult);
    assert.equal(analysis.id, envelope.idResult);
    assert.equal(analysis.modality, "ultrasound");
    assert.ok(CLASSES.includes(analysis.label));
    const total = Object.values(analysis.probabilities).reduce((sum, p) => sum + p, 0);
    assert.ok(Math.abs(total - 1) < 1e-6, `probabilities sum to ${total}`);
  });

  test("the app's error envelope: not an image is NO FILE ALLOWED with 415", async () => {
    const before = (await client.listAnalyses()).total;
    const { status, envelope } = await client.evaluateImage({
      file: { bytes: new TextEncoder().encode("this is not an image"), ext: "png" }, modality: "ultrasound",
    });
    assert.equal(status, 415);
    assert.deepEqual(envelope, { result: "ERROR", aditionalInfo: "NO FILE ALLOWED", idResult: null });
    assert.equal((await client.listAnalyses()).total, before, "nothing stored");
  });

  test("v1: analyse with options, history newest first, image, feedback, delete", async () => {
    const first = await client.analyze({ file: { bytes: image, ext: "png" }, modality: "ultrasound", options: { saliency: "none" } });
    const second = await client.analyze({
      file: { bytes: await readFile(OTHER_IMAGE), ext: "png" }, modality: "ultrasound",
      options: { operating_point: "balanced", saliency: "gradcam", saliency_layer: "layer3" },
    });
    assert.equal(first.saliency, null);
    assert.equal(second.operating_point, "balanced");
    assert.equal(second.options.saliency_layer, "layer3");
    assert.ok(second.saliency.grid.length > 0);

    const page = await client.listAnalyses({ limit: 100 });
    const ids = page.items.map((item) => item.id);
    assert.ok(ids.indexOf(second.id) < ids.indexOf(first.id), "newest first");

    const original = await client.imageBytes(first.images.original);
    assert.deepEqual([...original.slice(0, 8)], PNG_MAGIC);

    const feedback = await client.sendFeedback(first.id, {
      label: "benign", comment: "biopsy: fibroadenoma",
      ignore_regions: { polygons: [[[0, 0], [40, 0], [40, 30]]] },
    });
    assert.equal(feedback.version, 1);
    assert.ok(feedback.masks.ignore_regions);
    const stored = await client.getAnalysis(first.id);
    assert.equal(stored.feedback.at(-1).label, "benign");
    assert.equal(stored.feedback.at(-1).comment, "biopsy: fibroadenoma");

    assert.equal(await client.deleteAnalysis(first.id), null);
    await assert.rejects(client.getAnalysis(first.id), (error) => error instanceof BraNetApiError
      && error.status === 404 && error.code === "not_found");
    assert.ok(!(await client.listAnalyses({ limit: 100 })).items.some((item) => item.id === first.id));
  });

  test("v1: an option out of its range is a 400 naming the field", async () => {
    await assert.rejects(
      client.analyze({ file: { bytes: image, ext: "png" }, modality: "ultrasound", options: { roi_max: 0 } }),
      (error) => error instanceof BraNetApiError && error.status === 400 && JSON.stringify(error.details).includes("roi_max"),
    );
  });

  test("the CLI: analyze IMAGE --modality ultrasound --roi", async () => {
    const { stdout } = await run(process.execPath, [
      join(REPO, "mobile_client_stub", "cli.js"), "analyze", IMAGE, "--modality", "ultrasound", "--roi", "--url", service.url,
    ]);
    const output = JSON.parse(stdout);
    assert.equal(output.status, 200);
    assert.equal(output.envelope.result, "OK");
    assert.equal(output.analysis.id, output.envelope.idResult);
    assert.equal(output.analysis.extract_roi, true);
    assert.ok(output.analysis.rois.length > 0, "this image has a lesion the segmenter finds");
  });

  test("the CLI's refusals: exit 1 with the envelope, exit 2 on usage", async () => {
    const refused = await run(process.execPath, [
      join(REPO, "mobile_client_stub", "cli.js"), "analyze", join(REPO, "README.md"), "--url", service.url,
    ]).catch((error) => error);
    assert.equal(refused.code, 2, "README.md is not a jpg/jpeg/png the app would send");
    const usage = await run(process.execPath, [join(REPO, "mobile_client_stub", "cli.js"), "frobnicate"]).catch((error) => error);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /usage:/);
    const missing = await run(process.execPath, [
      join(REPO, "mobile_client_stub", "cli.js"), "show", "no-such-id", "--url", service.url,
    ]).catch((error) => error);
    assert.equal(missing.code, 1);
    assert.equal(JSON.parse(missing.stdout).error.code, "not_found");
  });
});
