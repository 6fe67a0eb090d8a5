// The service's JSON API v1, called with the signed-in user's Firebase ID token (none in local mode).

let tokenProvider = async () => null;

export function setTokenProvider(provider) {
  tokenProvider = provider;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function authHeaders(extra = {}) {
  const token = await tokenProvider();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function failure(response) {
  let code = "http_error";
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

export async function request(method, path, body) {
  const init = { method, headers: await authHeaders(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

export const getJson = (path) => request("GET", path);

// An owner-only image as an object URL (an <img src> cannot carry the bearer token).
export async function imageUrl(path) {
  const response = await fetch(path, { headers: await authHeaders() });
  if (!response.ok) throw await failure(response);
  return URL.createObjectURL(await response.blob());
}

// Whether an owner-only resource exists (the report may not be served by every version).
export async function exists(path) {
  const response = await fetch(path, { headers: await authHeaders() });
  return response.ok;
}

export async function fetchBlob(path) {
  const response = await fetch(path, { headers: await authHeaders() });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

// POST /v1/analyses with upload progress (fetch cannot report it); resolves with the analysis.
export async function analyse(form, onUploadProgress) {
  const headers = await authHeaders();
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/analyses");
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.timeout = 10 * 60 * 1000;
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onUploadProgress(event.loaded / event.total);
    };
    xhr.upload.onload = () => onUploadProgress(1);
    xhr.onload = () => {
      const body = xhr.response;
      if (xhr.status === 201) resolve(body);
      else reject(new ApiError(xhr.status, body?.error?.code || "http_error", body?.error?.message || `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new ApiError(0, "network_error", "the service could not be reached"));
    xhr.ontimeout = () => reject(new ApiError(0, "timeout", "no answer within 10 minutes"));
    xhr.send(form);
  });
}
