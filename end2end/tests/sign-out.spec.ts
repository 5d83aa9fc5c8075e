import { expect, test } from "../support/fixtures";
import { ConsolePage } from "../pages/console-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

test("sign-out returns to /login and the old session is gone", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  await new ConsolePage(page).goto();
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/login$/);
  await page.goto("/");
  await expect(page).toHaveURL(/\/login$/);
  const me = await page.request.post("/api/identity-graph-backfill/me", { data: {} });
  expect(me.status()).toBe(401);
  await screenshots(page, testInfo, "signed-out");
});
