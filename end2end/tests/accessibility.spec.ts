import AxeBuilder from "@axe-core/playwright";
import type { Page } from "@playwright/test";
import { expect, test } from "../support/fixtures";
import { ConsolePage } from "../pages/console-page";
import { LoginPage, waitForHydration } from "../pages/login-page";
import { ALLOWED, NOT_ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

async function seriousViolations(page: Page) {
  const results = await new AxeBuilder({ page }).analyze();
  return results.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
}

test("login, console, job detail and reporting have no serious or critical axe violations", async ({ page }, testInfo) => {
  const login = new LoginPage(page);
  await login.goto();
  expect(await seriousViolations(page)).toEqual([]);

  await login.signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  expect(await seriousViolations(page)).toEqual([]);

  await console.start({ key: "e2e-a11y", dryRun: true, numbers: { "Sleep between batches": "0" } });
  await expect(console.startResult()).toContainText("Started e2e-a11y:dry-run.");
  await page.goto("/jobs/e2e-a11y:dry-run");
  await expect(page.getByRole("heading", { name: "Effective options" })).toBeVisible();
  expect(await seriousViolations(page)).toEqual([]);
  await screenshots(page, testInfo, "job-detail-dry-run");

  await page.goto("/reporting");
  await waitForHydration(page);
  await expect(page.getByRole("heading", { name: "Reporting", exact: true })).toBeVisible();
  expect(await seriousViolations(page)).toEqual([]);
});

test("the not-allowed page has no serious or critical axe violations", async ({ page }) => {
  await new LoginPage(page).signIn(NOT_ALLOWED);
  await expect(page.getByRole("heading", { name: /not on the Identity Graph Backfill allow-list/ })).toBeVisible();
  expect(await seriousViolations(page)).toEqual([]);
});
