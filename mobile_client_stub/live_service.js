// The live BraNet service the tests run against: $BRANET_API_URL when it is set, else one started
// here with gunicorn on a free loopback port, in local single-user mode, on a temporary data folder.
// The Python is $BRANET_PYTHON, else the repository's .venv/bin/python, else python3.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const READY_TIMEOUT_MS = 240_000;

export function sharedData() {
  const candidates = [process.env.BRANET_SHARED_DATA, join(REPO, "..", "shared", "data"), "/work/shared/data"];
  const found = candidates.find((path) => path && existsSync(join(path, "busbra", "labels.csv")));
  if (!found) throw new Error("the data sets are not found: set BRANET_SHARED_DATA to the shared/data folder");
  return found;
}

function python() {
  if (process.env.BRANET_PYTHON) return process.env.BRANET_PYTHON;
  const venv = join(REPO, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

async function waitReady(url, child, log) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the service exited (${child.exitCode}):\n${log.join("")}`);
    try {
      const response = await fetch(`${url}/v1/ready`);
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((wake) => setTimeout(wake, 500));
  }
  throw new Error(`the service was not ready within ${READY_TIMEOUT_MS / 1000} s:\n${log.join("")}`);
}

/** Resolves with `{url, stop()}`. */
export async function startService() {
  if (process.env.BRANET_API_URL) {
    return { url: process.env.BRANET_API_URL.replace(/\/+$/, ""), stop: async () => {} };
  }
  const port = await freePort();
  const dataDir = await mkdtemp(join(tmpdir(), "branet-client-stub-"));
  const env = { ...process.env, PORT: String(port), BRANET_DATA_DIR: dataDir, BRANET_RATE_LIMIT: "10000 per minute" };
  delete env.BRANET_FIREBASE_PROJECT_ID; // local single-user mode, bound to loopback
  const child = spawn(python(), ["-m", "gunicorn", "-c", "gunicorn.conf.py", "api:create_app()"], {
    cwd: REPO, env, stdio: ["ignore", "ignore", "pipe"],
  });
  const log = [];
  child.stderr.on("data", (chunk) => {
    log.push(chunk.toString());
    if (log.length > 200) log.shift();
  });
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitReady(url, child, log);
  } catch (error) {
    child.kill("SIGKILL");
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  return {
    url,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((done) => child.once("exit", done));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
