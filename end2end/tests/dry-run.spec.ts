import { expect, test } from "../support/fixtures";
import { ConsolePage } from "../pages/console-page";
import { JobPage } from "../pages/job-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED, DEMO_USERS } from "../support/accounts";
import { screenshots } from "../support/screens";

test("the form shows the key a rehearsal of a named key will use", async ({ page }) => {
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  await console.jobKey().fill("q1");
  await expect(console.keyToUse()).toContainText("This run will use the key q1.");
  await console.toggle("Dry run").click();
  await expect(console.keyToUse()).toContainText("This run will use the key q1:dry-run.");
  await console.toggle("Dry run").click();
  await console.jobKey().fill("q1:dry-run");
  await expect(console.keyToUse()).toContainText("a real run needs a key that does not end in :dry-run");
});

test("a dry run with a blank key runs under :dry-run and skips everyone", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  await console.start({ dryRun: true, numbers: { "Batch size": "500", "Sleep between batches": "0" } });
  await expect(console.startResult()).toContainText("Started identity-graph-users:dry-run.");

  const row = console.row("identity-graph-users:dry-run");
  await expect(row).toBeVisible();
  await expect(row.getByText("dry run", { exact: true })).toBeVisible();
  await expect(row.getByText("completed")).toBeVisible({ timeout: 30_000 });
  const total = DEMO_USERS.toLocaleString("en-US");
  await expect(row).toContainText(`${total} scanned · cursor ${total}`);
  const cells = row.getByRole("cell");
  // processed, failed, skipped
  await expect(cells.nth(2)).toHaveText("0");
  await expect(cells.nth(3)).toHaveText("0");
  await expect(cells.nth(4)).toHaveText(total);
  await expect(console.row("identity-graph-users")).toHaveCount(0);
  // A completed job's bar is full, and a dry run's says it was a rehearsal.
  const bar = console.progressBar("identity-graph-users:dry-run");
  await expect(bar).toHaveAttribute("aria-valuenow", "100");
  await expect(bar).toHaveAttribute("aria-valuetext", /dry run: nothing written/);
  await screenshots(page, testInfo, "dry-run-completed");

  // The job page shows the coverage check stored when the run ended, with
  // its age, and "Check again" counts again and shows the new result.
  const job = new JobPage(page, "identity-graph-users:dry-run");
  await job.goto();
  const coverage = job.coverage();
  await expect(coverage).toContainText("Every user up to the cursor is accounted for.");
  await expect(coverage).toContainText(/Checked (just now|\d+ s ago)/);
  await coverage.getByRole("button", { name: "Check the coverage of identity-graph-users:dry-run again" }).click();
  await expect(coverage.getByRole("button", { name: /again$/ })).toHaveText("Check again");
  await expect(coverage).toContainText("Checked just now");
  await expect(coverage.locator(".coverage-error")).toHaveText("");
  await screenshots(page, testInfo, "dry-run-coverage");
});
