import { expect, test } from "../support/fixtures";
import { LoginPage, waitForHydration } from "../pages/login-page";
import { NOT_ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

test("an admin off the allow-list sees the warning and no controls, and the server refuses the list", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(NOT_ALLOWED);
  await expect(page).toHaveURL(/\/$/);
  await waitForHydration(page);
  await expect(page.getByRole("heading", { name: "Your account is not on the Identity Graph Backfill allow-list" })).toBeVisible();
  await expect(page.getByRole("heading", { name: "Start a run" })).toHaveCount(0);
  await expect(page.getByRole("table")).toHaveCount(0);
  await expect(page.getByRole("button", { name: /Start/ })).toHaveCount(0);
  // The server refuses too, with a valid session.
  const list = await page.request.post("/api/identity-graph-backfill/list", { data: {} });
  expect(list.status()).toBe(403);
  expect((await list.json()).code).toBe("FORBIDDEN");
  await screenshots(page, testInfo, "not-allowed");
});
