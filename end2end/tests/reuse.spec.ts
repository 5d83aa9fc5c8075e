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
  await expect(widget).toContainText(/\d+ jobs · \d+ active runs/);

  // Refreshing the widget calls the console's own `list` endpoint.
  const listResponse = page.waitForResponse((r) => r.url().endsWith("/api/identity-graph-backfill/list"));
  await widget.getByRole("button", { name: "Refresh" }).click();
  const response = await listResponse;
  expect(response.status()).toBe(200);
  const body = await response.json();
  await expect(widget).toContainText(`${body.summary.jobs} jobs`);
  await screenshots(page, testInfo, "reporting");
});
