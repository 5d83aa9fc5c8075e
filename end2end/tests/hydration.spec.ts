import { expect, test } from "../support/fixtures";
import { LoginPage } from "../pages/login-page";
import { screenshots } from "../support/screens";

test("the page hydrates: an empty sign-in is caught in the browser", async ({ page }, testInfo) => {
  const login = new LoginPage(page);
  const serverCalls: string[] = [];
  page.on("request", (request) => {
    if (request.url().includes("/api/")) serverCalls.push(request.url());
  });
  await login.goto();
  await login.submit().click();
  // Only the WASM client can show this without a round trip.
  await expect(page.getByText("enter your email address")).toBeVisible();
  expect(serverCalls).toEqual([]);
  await screenshots(page, testInfo, "login-hydrated");
});
