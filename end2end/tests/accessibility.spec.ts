import AxeBuilder from "@axe-core/playwright";
import { expect, test, type Page } from "@playwright/test";
import { ConsolePage } from "../pages/console-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

async function seriousViolations(page: Page) {
  const results = await new AxeBuilder({ page }).analyze();
  return results.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
}

test("login, console and job detail have no serious or critical axe violations", async ({ page }, testInfo) => {
  const login = new LoginPage(page);
  await login.goto();
  expect(await seriousViolations(page)).toEqual([]);

  await login.signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  expect(await seriousViolations(page)).toEqual([]);

  await console.start({ key: "e2e-a11y", dryRun: true, numbers: { "Sleep between batches": "0" } });
  await expect(console.startResult()).toContainText("Started e2e-a11y.");
  await page.goto("/jobs/e2e-a11y");
  await expect(page.getByRole("heading", { name: "Effective options" })).toBeVisible();
  expect(await seriousViolations(page)).toEqual([]);
  await screenshots(page, testInfo, "job-detail-dry-run");
});
