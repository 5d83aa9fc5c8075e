import { defineConfig } from "@playwright/test";

// Two app replicas share one fresh database (E2E_DATABASE_URL, made by
// scripts/test): the main one writes to the built-in Postgres graph, the
// second to an HTTP Identity Graph test server that rejects some users.
const databaseUrl = process.env.E2E_DATABASE_URL;
if (!databaseUrl) {
  throw new Error("E2E_DATABASE_URL is not set; run the suite through scripts/test");
}

// E2E_PORT_BASE moves all three ports, so two suites can run side by side.
const portBase = Number(process.env.E2E_PORT_BASE ?? 3100);
const MAIN_PORT = portBase;
const FAILING_GRAPH_APP_PORT = portBase + 1;
export const GRAPH_SERVER_PORT = portBase + 99;
export const MAIN_URL = `http://127.0.0.1:${MAIN_PORT}`;
export const FAILING_GRAPH_APP_URL = `http://127.0.0.1:${FAILING_GRAPH_APP_PORT}`;
export const GRAPH_SERVER_URL = `http://127.0.0.1:${GRAPH_SERVER_PORT}`;

// The server the suite runs: the debug build by default, because Leptos
// reports hydration problems in the browser console only in debug builds
// and the console fixture fails on them. E2E_PROFILE=release tests the
// release build instead.
export const APP_BINARY = `../target/${process.env.E2E_PROFILE ?? "debug"}/identity-graph-backfill`;

const appEnv = {
  DATABASE_URL: databaseUrl,
  LEPTOS_SITE_ROOT: "../target/site",
  IDENTITY_GRAPH_BACKFILL_ADMINS: "operator@example.com",
  LOGIN_MAX_FAILURES_PER_MINUTE: "100",
  RUST_LOG: "warn",
  RUST_BACKTRACE: "0",
  // Every replica tells the same receiver when a job comes to rest; it fails
  // each event's first attempt, so the history shows a retry.
  NOTIFY_WEBHOOK_URL: `${GRAPH_SERVER_URL}/webhook`,
  NOTIFY_RETRY_BASE_MS: "300",
  PUBLIC_BASE_URL: MAIN_URL,
};

export default defineConfig({
  testDir: "./tests",
  globalSetup: "./support/global-setup.ts",
  fullyParallel: false,
  workers: 1,
  retries: 0,
  timeout: 90_000,
  expect: { timeout: 15_000 },
  reporter: [["list"]],
  outputDir: "./test-results",
  use: {
    baseURL: MAIN_URL,
    viewport: { width: 1366, height: 768 },
    screenshot: "only-on-failure",
    trace: "retain-on-failure",
    launchOptions: {
      executablePath: "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
      ],
    },
  },
  webServer: [
    {
      command: `node support/graph-server.mjs ${GRAPH_SERVER_PORT}`,
      url: `${GRAPH_SERVER_URL}/health`,
      reuseExistingServer: false,
      stdout: "ignore",
    },
    {
      command: `${APP_BINARY} serve`,
      url: `${MAIN_URL}/healthz`,
      reuseExistingServer: false,
      timeout: 60_000,
      env: { ...appEnv, LEPTOS_SITE_ADDR: `127.0.0.1:${MAIN_PORT}`, IDENTITY_GRAPH_SINK: "postgres" },
    },
    {
      command: `${APP_BINARY} serve`,
      url: `${FAILING_GRAPH_APP_URL}/healthz`,
      reuseExistingServer: false,
      timeout: 60_000,
      env: {
        ...appEnv,
        LEPTOS_SITE_ADDR: `127.0.0.1:${FAILING_GRAPH_APP_PORT}`,
        IDENTITY_GRAPH_SINK: "http",
        IDENTITY_GRAPH_URL: GRAPH_SERVER_URL,
        IDENTITY_GRAPH_TOKEN: "e2e-token",
      },
    },
  ],
});
