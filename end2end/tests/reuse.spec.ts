import { expect, test } from "../support/fixtures";
import { LoginPage, waitForHydration } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

test("/reporting shows the backfill widget fed by the same list server function", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  await page.goto("/reporting");
  await waitForHydration(page);
  await expect(page.getByRole("heading", { name: "Reporting", exact: true })).toBeVisible();
  const widget = page.getByRole("region", { name: "Identity Graph Backfill" });
  const summary = widget.locator(".widget-summary");
  await expect(summary).toHaveText(/^[\d,]+ jobs · [\d,]+ active runs$/);
  const jobs = (n: number) => new RegExp(`^${n.toLocaleString("en-US")} jobs · [\\d,]+ active runs$`);
  const before = Number((await summary.innerText()).match(/^([\d,]+) jobs/)![1].replace(/,/g, ""));

  // A job the widget has not seen: only a widget that shows the refreshed
  // answer can count it.
  const key = `e2e-reuse-${Date.now()}`;
  const started = await page.request.post("/api/identity-graph-backfill/start", {
    data: { job_key: key, dry_run: true, batch_size: 1000, sleep_ms: 0 },
  });
  expect(started.status()).toBe(200);
  await expect(summary).toHaveText(jobs(before));

  // Refreshing the widget calls the console's own `list` endpoint.
  const listResponse = page.waitForResponse((r) => r.url().endsWith("/api/identity-graph-backfill/list"));
  await widget.getByRole("button", { name: "Refresh" }).click();
  const response = await listResponse;
  expect(response.status()).toBe(200);
  const body = await response.json();
  expect(body.summary.jobs).toBe(before + 1);
  await expect(summary).toHaveText(jobs(before + 1));
  await screenshots(page, testInfo, "reporting");
});
