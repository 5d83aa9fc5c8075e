import { execFileSync } from "node:child_process";
import { APP_BINARY } from "../playwright.config";
import { ALLOWED, DEMO_USERS, NOT_ALLOWED } from "./accounts";

// Seeds the fresh database through the binary's own subcommands.
export default function globalSetup() {
  const binary = APP_BINARY;
  const env = { ...process.env, DATABASE_URL: process.env.E2E_DATABASE_URL, RUST_LOG: "warn" };
  execFileSync(binary, ["seed-demo", "--users", String(DEMO_USERS)], { env, stdio: "inherit" });
  for (const account of [ALLOWED, NOT_ALLOWED]) {
    execFileSync(binary, ["admin", "add", account.email], { env, input: account.password, stdio: ["pipe", "inherit", "inherit"] });
  }
}
