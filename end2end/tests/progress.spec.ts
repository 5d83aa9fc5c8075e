import { expect, test } from "../support/fixtures";
import { ConsolePage } from "../pages/console-page";
import { JobPage } from "../pages/job-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

const KEY = "e2e-progress";
// Slow enough to watch for a while: 20 users every ~half second.
const PACED = { "Batch size": "20", "Sleep between batches": "400", Concurrency: "2" };

test("a running job shows its progress as bars, a throughput sparkline and the tab title", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  await console.start({ key: KEY, numbers: PACED });
  await expect(console.startResult()).toContainText(`Started ${KEY}.`);

  // Every row has a bar; the running one says how much of the source is covered.
  const rows = page.getByRole("row").filter({ has: page.getByRole("link") });
  await expect(rows.first()).toBeVisible();
  await expect(page.getByRole("progressbar")).toHaveCount(await rows.count());
  await expect(console.progressBar(KEY)).toHaveAttribute("aria-valuetext", /% of the source covered/, { timeout: 15_000 });
  await expect(page).toHaveTitle(new RegExp(`^▶ ~?(<1|\\d+)% · ${KEY}`));
  await screenshots(page, testInfo, "progress-console");

  const job = new JobPage(page, KEY);
  await job.goto();
  await expect(job.progressBar()).toHaveAttribute("aria-valuenow", /^\d+$/, { timeout: 15_000 });
  // The sparkline needs two refreshes after the first sample.
  await expect(job.sparkline()).toBeVisible({ timeout: 15_000 });
  await expect(page.getByText(/users\/s now/)).toBeVisible();
  await expect(page).toHaveTitle(new RegExp(`^▶ ~?(<1|\\d+)% · ${KEY}$`));
  await screenshots(page, testInfo, "progress-job-running");

  await job.stop();
  await expect(page).toHaveTitle(`◼ stopped · ${KEY}`, { timeout: 15_000 });
  await expect(job.sparkline()).toHaveCount(0);
});
