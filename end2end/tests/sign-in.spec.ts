import { expect, test } from "../support/fixtures";
import { ConsolePage } from "../pages/console-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

test("a signed-out visit goes to /login, and the allowed admin gets the controls", async ({ page }, testInfo) => {
  await page.goto("/");
  await expect(page).toHaveURL(/\/login$/);
  await new LoginPage(page).signIn(ALLOWED);
  await expect(page).toHaveURL(/\/$/);
  const console = new ConsolePage(page);
  await console.goto();
  await expect(page.getByRole("heading", { name: "Start a run" })).toBeVisible();
  await expect(page.getByRole("heading", { name: "Jobs", exact: true })).toBeVisible();
  await expect(page.getByRole("banner").getByText(ALLOWED.email)).toBeVisible();
  await screenshots(page, testInfo, "console-signed-in");
});
