import { expect, test } from "../support/fixtures";
import { FAILING_GRAPH_APP_URL } from "../playwright.config";
import { ConsolePage } from "../pages/console-page";
import { JobPage } from "../pages/job-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

test.use({ baseURL: FAILING_GRAPH_APP_URL });

test("a run against an Identity Graph that rejects users shows the errors", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  await console.start({
    key: "e2e-failing-graph",
    numbers: { "Batch size": "200", "Sleep between batches": "0", "Max consecutive failures": "10000" },
  });
  const row = console.row("e2e-failing-graph");
  await expect(row.getByText("completed")).toBeVisible({ timeout: 60_000 });
  await expect(row.locator(".last-error")).toContainText("HTTP 400");

  await row.getByRole("link", { name: "e2e-failing-graph" }).click();
  await expect(page.getByRole("heading", { name: "Last error" })).toBeVisible();
  await expect(page.locator(".error-block")).toContainText("rejected: identifiers failed validation");
  const job = new JobPage(page, "e2e-failing-graph");
  await job.classChip("http 400").click();
  const failures = job.failureRows();
  await expect(failures.nth(1)).toContainText("http 400");
  const firstUserId = Number(await failures.nth(1).getByRole("cell").first().innerText());
  expect(firstUserId % 7).toBe(0);
  await expect(failures.nth(1)).toContainText("HTTP 400");
  await screenshots(page, testInfo, "failing-graph-detail");
});
