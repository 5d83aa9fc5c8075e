import { expect, test } from "../support/fixtures";
import { ConsolePage } from "../pages/console-page";
import { JobPage } from "../pages/job-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

const KEY = "e2e-real-run";

function cursorOf(label: string): number {
  const match = label.match(/cursor ([\d,]+)/);
  return match ? Number(match[1].replace(/,/g, "")) : NaN;
}

test("a real run stops cooperatively and continues from its cursor", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  await console.start({ key: KEY, numbers: { "Batch size": "20", "Sleep between batches": "400", Concurrency: "2" } });
  await expect(console.startResult()).toContainText(`Started ${KEY}.`);

  const row = console.row(KEY);
  await expect(row.getByText("running")).toBeVisible();
  await expect(row.locator(".progress")).not.toContainText("cursor 0", { timeout: 15_000 });
  await screenshots(page, testInfo, "real-run-running");

  await console.stop(KEY);
  await expect(row.getByText(/^(stopping|stopped)$/)).toBeVisible();
  await expect(row.getByText("stopped", { exact: true })).toBeVisible({ timeout: 15_000 });
  const stoppedAt = cursorOf(await row.locator(".progress").innerText());
  expect(stoppedAt).toBeGreaterThan(0);

  // The restart continues from the stop's cursor: its own answer says so
  // (a restart from 0 would pass the stop point too, seconds later).
  const restart = page.waitForResponse((r) => r.url().endsWith("/api/identity-graph-backfill/start"));
  await console.start({ key: KEY, numbers: { "Batch size": "20", "Sleep between batches": "400", Concurrency: "2" } });
  const restarted = await restart;
  expect(restarted.status()).toBe(200);
  const body = await restarted.json();
  expect(body.started).toBe(true);
  expect(body.job.job_key).toBe(KEY);
  expect(body.job.cursor, "the restart starts at the cursor the stop left").toBe(stoppedAt);
  await expect(console.startResult()).toContainText(`Started ${KEY}.`);
  await expect
    .poll(async () => cursorOf(await row.locator(".progress").innerText()), { timeout: 15_000 })
    .toBeGreaterThan(stoppedAt);
  await console.stop(KEY);
  await expect(row.getByText("stopped", { exact: true })).toBeVisible({ timeout: 15_000 });

  await row.getByRole("link", { name: KEY }).click();
  const job = new JobPage(page, KEY);
  await expect(job.history()).toBeVisible();
  await expect(job.historyEntries("started")).toHaveCount(2);
  await expect(job.historyEntries("stop")).toHaveCount(2);
  await expect(job.historyEntries("stop").first()).toContainText(`Stop of run 2 requested by ${ALLOWED.email}`);
  await expect(job.historyEntries("started").first()).toContainText(`Run 2 started by ${ALLOWED.email}`);
  await expect(job.historyEntries("started").first()).toContainText("batch 20 · concurrency 2 · sleep 400 ms");
  await screenshots(page, testInfo, "real-run-detail");
});
