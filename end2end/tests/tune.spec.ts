import { expect, test } from "../support/fixtures";
import { ConsolePage } from "../pages/console-page";
import { JobPage } from "../pages/job-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

const KEY = "e2e-tune";

test("a running job is slowed down from its page, and the change is in its history", async ({ page }, testInfo) => {
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
  await expect(panel.getByLabel("Max rate")).toHaveValue("50");
  // The run's replica reports its brake: the limit it applies, and what holds it.
  await expect(page.getByLabel("The run's brake")).toContainText("Max rate50 users/s", { timeout: 10_000 });
  await expect(page.getByLabel("The run's brake")).toContainText("Graph p50 / p95");

  await panel.getByLabel("Max rate").fill("20");
  const answer = page.waitForResponse((r) => r.url().endsWith("/api/identity-graph-backfill/tune"));
  await panel.getByRole("button", { name: "Apply" }).click();
  const tuned = await answer;
  expect(tuned.status()).toBe(200);
  const body = await tuned.json();
  expect(body.job.options.max_rate).toBe(20);
  expect(body.changes).toEqual([
    expect.objectContaining({ field: "max_rate", old_value: 50, new_value: 20, tuned_by: ALLOWED.email }),
  ]);
  await expect(panel.getByRole("status")).toHaveText("Applied: Max rate 50 → 20.");

  const tunes = job.historyEntries("tuned");
  await expect(tunes).toHaveCount(1);
  await expect(tunes.first()).toContainText(`Max rate 50 → 20 by ${ALLOWED.email}`);
  // The runner applied the new limit: its next report, on the page's next poll, says so.
  await expect(page.getByLabel("The run's brake")).toContainText("Max rate20 users/s", { timeout: 10_000 });
  await expect(page.getByLabel("The run's brake")).toContainText("Held bymax rate", { timeout: 15_000 });
  await screenshots(page, testInfo, "tune");

  // A value out of range is clamped and said so.
  await panel.getByLabel("Concurrency").fill("500");
  await panel.getByRole("button", { name: "Apply" }).click();
  await expect(panel.getByRole("status")).toHaveText(
    "Applied: Concurrency 2 → 64. Concurrency 500 was clamped to 64.",
  );
  await expect(tunes).toHaveCount(2);

  await job.stop();
  await expect(page.locator(".status-line")).toContainText("stopped", { timeout: 15_000 });
  await expect(page.getByRole("region", { name: "Tune the running job" })).toHaveCount(0);
});
