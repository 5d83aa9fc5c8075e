import { expect, test } from "../support/fixtures";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

// The browser logs the refused sign-in request itself; that one is expected.
test.use({ expectedConsoleMessages: [/status of 401/] });

test("a wrong password shows an inline error and stays on /login", async ({ page }, testInfo) => {
  const login = new LoginPage(page);
  await login.attemptSignIn({ email: ALLOWED.email, password: "not-the-password" });
  await expect(page.getByRole("alert").filter({ hasText: "The email or password is incorrect." })).toBeVisible();
  await expect(page).toHaveURL(/\/login$/);
  await screenshots(page, testInfo, "login-wrong-password");
});
