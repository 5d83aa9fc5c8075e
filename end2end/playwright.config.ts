import { defineConfig } from "@playwright/test";

// Two app replicas share one fresh database (E2E_DATABASE_URL, made by
// scripts/test): the main one writes to the built-in Postgres graph, the
// second to an HTTP Identity Graph test server that rejects some users.
const databaseUrl = process.env.E2E_DATABASE_URL;
if (!databaseUrl) {
  throw new Error("E2E_DATABASE_URL is not set; run the suite through scripts/test");
}

export const MAIN_URL = "http://127.0.0.1:3100";
export const FAILING_GRAPH_APP_URL = "http://127.0.0.1:3101";
export const GRAPH_SERVER_URL = "http://127.0.0.1:3199";

const appEnv = {
  DATABASE_URL: databaseUrl,
  LEPTOS_SITE_ROOT: "../target/site",
  IDENTITY_GRAPH_BACKFILL_ADMINS: "operator@example.com",
  LOGIN_MAX_FAILURES_PER_MINUTE: "100",
  RUST_LOG: "warn",
  RUST_BACKTRACE: "0",
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
      command: "node support/graph-server.mjs",
      url: `${GRAPH_SERVER_URL}/health`,
      reuseExistingServer: false,
      stdout: "ignore",
    },
    {
      command: "../target/debug/identity-graph-backfill serve",
      url: `${MAIN_URL}/healthz`,
      reuseExistingServer: false,
      timeout: 60_000,
      env: { ...appEnv, LEPTOS_SITE_ADDR: "127.0.0.1:3100", IDENTITY_GRAPH_SINK: "postgres" },
    },
    {
      command: "../target/debug/identity-graph-backfill serve",
      url: `${FAILING_GRAPH_APP_URL}/healthz`,
      reuseExistingServer: false,
      timeout: 60_000,
      env: {
        ...appEnv,
        LEPTOS_SITE_ADDR: "127.0.0.1:3101",
        IDENTITY_GRAPH_SINK: "http",
        IDENTITY_GRAPH_URL: GRAPH_SERVER_URL,
        IDENTITY_GRAPH_TOKEN: "e2e-token",
      },
    },
  ],
});
