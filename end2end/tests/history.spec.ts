import { expect, test } from "../support/fixtures";
import { ConsolePage } from "../pages/console-page";
import { JobPage } from "../pages/job-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

const KEY = "e2e-history";

// Start, tune, stop, start again to the end: the job page tells all of it in
// one timeline, newest first, with each run's options, who did what, and
// what the webhook was told (the suite's receiver fails each event's first
// attempt, so each delivery shows its retry).
test("the job's history tells every run, tune, stop and notification in one timeline", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  await console.start({
    key: KEY,
    numbers: { "Batch size": "20", "Sleep between batches": "400", Concurrency: "2", "Max rate": "50" },
  });
  await expect(console.startResult()).toContainText(`Started ${KEY}.`);

  const job = new JobPage(page, KEY);
  await job.goto();
  const panel = page.getByRole("region", { name: "Tune the running job" });
  await panel.getByLabel("Max rate").fill("40");
  await panel.getByRole("button", { name: "Apply" }).click();
  await expect(panel.getByRole("status")).toHaveText("Applied: Max rate 50 → 40.");
  await job.stop();
  await expect(page.locator(".status-line")).toContainText("stopped", { timeout: 15_000 });

  await console.goto();
  await console.start({ key: KEY, numbers: { "Batch size": "200", "Sleep between batches": "0", Concurrency: "2", "Max rate": "0" } });
  await expect(console.row(KEY).getByText("completed", { exact: true })).toBeVisible({ timeout: 60_000 });

  await job.goto();
  // Both events reach the receiver on their second attempt, a second or two later.
  await expect
    .poll(
      async () => {
        await page.reload();
        return job
          .historyEntries("notified")
          .filter({ has: page.locator(".delivery", { hasText: "delivered" }) })
          .filter({ hasText: "after 2 attempts" })
          .count();
      },
      { timeout: 20_000 },
    )
    .toBe(2);
  await waitForKinds(job, ["notified", "completed", "started", "notified", "stopped", "stop", "tuned", "started"]);

  const entries = job.historyEntries();
  await expect(entries.nth(0)).toContainText("Webhook told: completed");
  await expect(entries.nth(1)).toContainText("Run 2 completed");
  await expect(entries.nth(1)).toContainText(/took .+ at [\d,]+ users\/s/);
  await expect(entries.nth(2)).toContainText(`Run 2 started by ${ALLOWED.email}`);
  await expect(entries.nth(2)).toContainText("batch 200 · concurrency 2 · sleep 0 ms · no rate limit");
  await expect(entries.nth(3)).toContainText("Webhook told: stopped");
  await expect(entries.nth(4)).toContainText("Run 1 stopped");
  await expect(entries.nth(5)).toContainText(`Stop of run 1 requested by ${ALLOWED.email}`);
  await expect(entries.nth(6)).toContainText(`Max rate 50 → 40 by ${ALLOWED.email}`);
  await expect(entries.nth(7)).toContainText(`Run 1 started by ${ALLOWED.email}`);
  await expect(entries.nth(7)).toContainText("batch 20 · concurrency 2 · sleep 400 ms · max 50 users/s");
  // Each entry's time says when, exactly, on hover.
  await expect(entries.nth(7).locator("time")).toHaveAttribute("title", /UTC$/);
  await job.history().scrollIntoViewIfNeeded();
  await screenshots(page, testInfo, "history");
});

async function waitForKinds(job: JobPage, kinds: string[]) {
  await expect
    .poll(async () => job.historyEntries().evaluateAll((items) => items.map((item) => item.getAttribute("data-kind"))))
    .toEqual(kinds);
}
