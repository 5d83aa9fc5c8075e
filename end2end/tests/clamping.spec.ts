import { expect, test } from "../support/fixtures";
import { ConsolePage } from "../pages/console-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

test("out-of-range values are clamped and shown; a bad key is refused inline", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();

  const startCalls: string[] = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/start")) startCalls.push(r.url());
  });
  await console.start({ key: "Bad Key!", dryRun: true });
  await expect(page.locator("#job_key-error")).toContainText(
    "'B', ' ' (a space), 'K' and '!' are not allowed",
  );
  await expect(page.getByLabel("Job key")).toHaveAttribute("aria-invalid", "true");
  expect(startCalls).toEqual([]);
  await screenshots(page, testInfo, "clamping-bad-key");

  // The browser shows the clamp before anything is sent …
  await console.fillNumber("Batch size", "5000");
  await expect(page.getByText("Will be clamped to 1,000")).toBeVisible();
  // … and the server's answer shows the values it used.
  await console.start({
    key: "e2e-clamped",
    dryRun: true,
    numbers: { "Batch size": "5000", "Sleep between batches": "-5", Concurrency: "999" },
  });
  const result = console.startResult();
  await expect(result).toContainText("Started e2e-clamped:dry-run.");
  await expect(result).toContainText("batch_size: asked 5000, using 1000");
  await expect(result).toContainText("sleep_ms: asked -5, using 0");
  await expect(result).toContainText("concurrency: asked 999, using 64");
  await expect(page.getByRole("textbox", { name: /^Batch size/ })).toHaveValue("1000");

  await console.row("e2e-clamped:dry-run").getByRole("link", { name: "e2e-clamped:dry-run" }).click();
  const options = page.locator("dl.options");
  await expect(options).toContainText("Batch size1,000");
  await expect(options).toContainText("Concurrency64");
  await screenshots(page, testInfo, "clamping-effective-options");
});
