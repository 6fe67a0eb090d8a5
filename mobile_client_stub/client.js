// BraNet API client: exactly the request the BraNet React Native app makes (the legacy route, see
// /work/shared/docs/branet-app-contract.md in the project) and the JSON API v1.
// Runs on Node 20 (global fetch, FormData, Blob) and in React Native; no dependencies.

export const APP_TIMEOUT_MS = 10 * 60 * 1000; // the app waits up to 10 minutes for an analysis
export const MODALITIES = ["ultrasound", "mammography"];
const EXTENSIONS = ["jpg", "jpeg", "png"];

/** An error answer of the v1 API: `{"error": {"code", "message", "details"}}` with its HTTP status. */
export class BraNetApiError extends Error {
  constructor(status, code, message, details) {
    super(`${status} ${code}: ${message}`);
    this.name = "BraNetApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The app derives the modality from its card's title: "u..." is ultrasound, anything else mammography. */
export function modalityFromTitle(title) {
  return String(title).trim().toLowerCase().startsWith("u") ? "ultrasound" : "mammography";
}

/** The file's extension as the app sends it (jpg, jpeg or png), from a name, a URI or a MIME type. */
export function extensionOf(nameOrType) {
  const text = String(nameOrType || "").toLowerCase();
  const ext = text.includes("/") && !text.includes(".") ? text.split("/").pop() : text.split(/[?#]/)[0].split(".").pop();
  if (!EXTENSIONS.includes(ext)) throw new TypeError(`the app sends only ${EXTENSIONS.join(", ")} images, not "${ext}"`);
  return ext;
}

// The one multipart part the app sends: field `file`, file name `image.<ext>`, type `image/<ext>`.
// In React Native `file` is `{uri, ext}` (FormData takes {uri, name, type}); elsewhere `{bytes, ext}`.
function filePart(form, file) {
  const ext = file.ext ? extensionOf(`x.${file.ext}`) : extensionOf(file.name || file.uri);
  const name = `image.${ext}`;
  const type = `image/${ext}`;
  if (file.uri && !file.bytes) {
    form.append("file", { uri: file.uri, name, type }); // React Native's FormData
  } else {
    const blob = file.bytes instanceof Blob ? file.bytes : new Blob([file.bytes], { type });
    form.append("file", blob.type === type ? blob : new Blob([blob], { type }), name);
  }
}

function withTimeout(ms) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ms);
  return { signal: controller.signal, done: () => clearTimeout(timer) };
}

/**
 * @param {object} settings
 * @param {string} settings.baseUrl       the service, e.g. http://127.0.0.1:8080 (no trailing slash needed)
 * @param {(forceRefresh: boolean) => Promise<string|null>} [settings.getIdToken]
 *        the Firebase ID token; with Firebase Auth: (force) => auth.currentUser.getIdToken(force).
 *        Local single-user mode needs none (return null).
 * @param {typeof fetch} [settings.fetch]  defaults to the global fetch
 * @param {number} [settings.timeoutMs]    per request, default 10 minutes as in the app
 */
export function createClient({ baseUrl, getIdToken = async () => null, fetch: fetchImpl, timeoutMs = APP_TIMEOUT_MS } = {}) {
  if (!baseUrl) throw new TypeError("baseUrl is required");
  const base = String(baseUrl).replace(/\/+$/, "");
  const doFetch = fetchImpl || globalThis.fetch.bind(globalThis);

  async function headers(extra = {}) {
    // The app force-refreshes the token before each request.
    const token = await getIdToken(true);
    return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
  }

  async function send(method, path, { body, json, accept = "application/json" } = {}) {
    const timeout = withTimeout(timeoutMs);
    try {
      const init = { method, headers: await headers({ Accept: accept }), signal: timeout.signal };
      if (json !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(json);
      } else if (body !== undefined) init.body = body; // FormData: fetch sets the multipart boundary
      return await doFetch(`${base}${path}`, init);
    } finally {
      timeout.done();
    }
  }

  async function v1(method, path, options) {
    const response = await send(method, path, options);
    if (response.status === 204) return null;
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      throw new BraNetApiError(response.status, "not_json", `the service answered ${text.slice(0, 200)}`);
    }
    if (!response.ok) {
      const error = body?.error || {};
      throw new BraNetApiError(response.status, error.code || "http_error", error.message || response.statusText, error.details);
    }
    return body;
  }

  const id = (value) => encodeURIComponent(value);

  return {
    baseUrl: base,

    /**
     * The app's own call: POST /evaluate-image/{modality}/?extract_roi=true|false, one multipart
     * part `file` named image.<ext>. Resolves with `{status, envelope}`: the HTTP status and the
     * envelope `{result, aditionalInfo, idResult}`, whatever the status (the app reads the JSON body
     * in every case).
     */
    async evaluateImage({ file, modality, extractRoi = false }) {
      const name = String(modality).toLowerCase();
      const form = new FormData();
      filePart(form, file);
      const response = await send("POST", `/evaluate-image/${name}/?extract_roi=${extractRoi ? "true" : "false"}`, { body: form });
      return { status: response.status, envelope: await response.json() };
    },

    /** POST /v1/analyses: the analysis itself (201), with any analysis options as form fields. */
    analyze({ file, modality, extractRoi = false, options = {} }) {
      const form = new FormData();
      filePart(form, file);
      form.append("modality", modality);
      form.append("extract_roi", extractRoi ? "true" : "false");
      for (const [key, value] of Object.entries(options)) form.append(key, String(value));
      return v1("POST", "/v1/analyses", { body: form });
    },

    listAnalyses({ limit = 20, offset = 0 } = {}) {
      return v1("GET", `/v1/analyses?limit=${limit}&offset=${offset}`);
    },
    getAnalysis(analysisId) {
      return v1("GET", `/v1/analyses/${id(analysisId)}`);
    },
    /** Soft delete, as the app does (isActive = false): 204, then 404 for everyone. */
    deleteAnalysis(analysisId) {
      return v1("DELETE", `/v1/analyses/${id(analysisId)}`);
    },
    /** `{label, comment, missed_lesions, ignore_regions}`; masks are `{png: base64}` or `{polygons}`. */
    sendFeedback(analysisId, feedback) {
      return v1("POST", `/v1/analyses/${id(analysisId)}/feedback`, { json: feedback });
    },
    /** `{box: {x0, y0, x1, y1}, points: [{x, y, positive}], operating_point}` in image pixels. */
    correctRoi(analysisId, prompt) {
      return v1("POST", `/v1/analyses/${id(analysisId)}/roi`, { json: prompt });
    },
    /** A stored image (owner only) by the URL path the analysis lists, as bytes. */
    async imageBytes(path) {
      const response = await send("GET", path, { accept: "image/png" });
      if (!response.ok) throw new BraNetApiError(response.status, "image_unavailable", `GET ${path} answered ${response.status}`);
      return new Uint8Array(await response.arrayBuffer());
    },
    health() {
      return v1("GET", "/v1/health");
    },
    ready() {
      return v1("GET", "/v1/ready");
    },
    models() {
      return v1("GET", "/v1/models");
    },
  };
}
