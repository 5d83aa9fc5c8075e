import { expect, test } from "../support/fixtures";
import { FAILING_GRAPH_APP_URL } from "../playwright.config";
import { ConsolePage } from "../pages/console-page";
import { JobPage } from "../pages/job-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

// The graph behind this app rejects multiples of 7 with a 400 and the other
// multiples of 11 with a 422 (support/graph-server.mjs).
test.use({ baseURL: FAILING_GRAPH_APP_URL });

const KEY = "e2e-failure-workbench";

test("failures are grouped by reason, filtered, exported and retried by class", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  await console.start({
    key: KEY,
    numbers: { "Batch size": "200", "Sleep between batches": "0", "Max consecutive failures": "10000" },
  });
  await expect(console.row(KEY).getByText("completed")).toBeVisible({ timeout: 60_000 });

  const job = new JobPage(page, KEY);
  await job.goto();
  // Largest class first, each with its count.
  const chips = page.getByRole("list", { name: "Unresolved failures by class" }).getByRole("button");
  await expect(chips.nth(0)).toContainText("all");
  await expect(chips.nth(1)).toContainText("http 400");
  await expect(chips.nth(2)).toContainText("http 422");
  const count422 = Number((await job.classChip("http 422").locator(".class-count").innerText()).replace(/,/g, ""));
  expect(count422).toBeGreaterThan(0);

  // One class: every row is of it.
  await job.classChip("http 422").click();
  await expect(job.classChip("http 422")).toHaveAttribute("aria-pressed", "true");
  const rows = job.failureRows();
  await expect(rows.nth(1)).toContainText("http 422");
  for (const text of (await rows.allInnerTexts()).slice(1)) expect(text).toContain("http 422");

  // The export holds exactly the filtered set.
  const href = await job.exportLink().getAttribute("href");
  expect(href).toContain("class=http%20422");
  const csv = await page.request.get(href!);
  expect(csv.status()).toBe(200);
  expect(csv.headers()["content-type"]).toContain("text/csv");
  const lines = (await csv.text()).trim().split(/\r?\n/);
  expect(lines[0]).toBe("user_id,class,message,attempts,first_failed_at,last_failed_at");
  expect(lines.length - 1).toBe(count422);
  for (const line of lines.slice(1)) {
    const id = Number(line.split(",")[0]);
    expect(id % 11).toBe(0);
    expect(id % 7).not.toBe(0);
  }

  // A search by user id narrows to that user.
  const oneId = lines[1].split(",")[0];
  await job.search(oneId);
  await expect(rows).toHaveCount(2);
  await expect(rows.nth(1).getByRole("cell").first()).toHaveText(oneId);
  await job.search("");

  await screenshots(page, testInfo, "failures-by-reason");

  // Retry exactly the 422s: a failed-only run restricted to that class.
  await job.retryButton().click();
  await expect(page.getByRole("status").filter({ hasText: "Started a failed-only run" })).toContainText('class “http 422”');
  await expect(job.historyEntries("started").first()).toContainText('only class "http 422"', { timeout: 30_000 });
  await expect(page.locator(".options")).toContainText('class "http 422"', { timeout: 30_000 });
  await expect(page.locator(".status-line")).toContainText("completed", { timeout: 60_000 });
  // The graph still rejects them: the same users, one more attempt each.
  await expect(job.classChip("http 422").locator(".class-count")).toHaveText(count422.toLocaleString("en-US"));
  await expect(rows.nth(1).getByRole("cell").nth(3)).toHaveText("2");
});
