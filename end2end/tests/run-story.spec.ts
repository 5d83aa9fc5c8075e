// What an operator reads first, and what a run tells after it ends (issue 25):
// one test per operator action, at both sizes, with the console-error fixture.
import { expect, test } from "../support/fixtures";
import { ConsolePage } from "../pages/console-page";
import { JobPage } from "../pages/job-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED, DEMO_USERS } from "../support/accounts";
import { SIZES, screenshots } from "../support/screens";

test("the first screen of an allowed admin shows the jobs; the guide is one click away", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  for (const size of SIZES) {
    await page.setViewportSize({ width: size.width, height: size.height });
    await page.evaluate(() => window.scrollTo(0, 0));
    const heading = await console.jobsHeading().boundingBox();
    expect(heading, "the Jobs heading is rendered").not.toBeNull();
    expect(heading!.y + heading!.height, `the jobs start on the first screen at ${size.name} size`).toBeLessThan(size.height);
  }
  await page.setViewportSize({ width: 1366, height: 768 });
  await expect(page.getByText(/reader view/i)).toHaveCount(0);
  // The guide is below the jobs and the form, and the head's link reaches it.
  await console.guideLink().click();
  await expect(console.guideHeading()).toBeInViewport();
  await expect(console.guideToggle()).toHaveAttribute("aria-expanded", "true");
  await screenshots(page, testInfo, "first-screen");
});

test("a completed job shows its duration and average rate, in the table, on its page and per run", async ({ page }, testInfo) => {
  const key = "e2e-story";
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  await console.start({ key, numbers: { "Batch size": "500", "Sleep between batches": "0" } });
  await expect(console.startResult()).toContainText(`Started ${key}.`);
  const row = console.row(key);
  await expect(row.getByText("completed")).toBeVisible({ timeout: 30_000 });
  await expect(row.locator(".run-story .duration")).toHaveText(/^Run 1 took (\d+(\.\d)? s|.*min.*)$/);
  await expect(row.locator(".run-story .avg-rate")).toHaveText(/^avg [\d,]+ users\/s$/);
  await screenshots(page, testInfo, "story-console");

  const job = new JobPage(page, key);
  await job.goto();
  await expect(job.fact("Last run")).toHaveText("Run 1");
  await expect(job.fact("Duration")).toHaveText(/\d/);
  await expect(job.fact("Average rate")).toHaveText(/^[\d,]+ users\/s$/);
  await expect(job.historyEntries("completed").first()).toContainText("Run 1 completed");
  await expect(job.historyEntries("completed").first()).toContainText(/took .+ at [\d,]+ users\/s/);
  await screenshots(page, testInfo, "story-job");
});

test("the chart has points after the run ends and after a reload", async ({ page }, testInfo) => {
  const key = "e2e-chart";
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  // About 9 s: 30 batches of 100, 300 ms apart.
  await console.start({ key, dryRun: true, numbers: { "Batch size": "100", "Sleep between batches": "300" } });
  await expect(console.startResult()).toContainText(`Started ${key}:dry-run.`);
  await expect(console.miniChart(`${key}:dry-run`)).toBeVisible({ timeout: 15_000 });
  await screenshots(page, testInfo, "chart-console-running");

  const job = new JobPage(page, `${key}:dry-run`);
  await job.goto();
  await expect(page.getByText("completed", { exact: true }).first()).toBeVisible({ timeout: 30_000 });
  await expect.poll(() => job.chartPoints()).toBeGreaterThanOrEqual(3);
  const ended = await job.chartPoints();
  await expect(job.chart()).toHaveAttribute("aria-label", /peak [\d,]+ users\/s, at the end/);
  await page.reload();
  await job.goto();
  expect(await job.chartPoints(), "the same points after a reload").toBe(ended);
  await screenshots(page, testInfo, "chart-job-ended");
});

test("a dry run shows what the real run would write and skip", async ({ page }, testInfo) => {
  const key = "e2e-would";
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  await console.toggle("Dry run").click();
  // The form says a dry run waits on no pacing, and auto-resume never applies.
  await expect(console.field("Sleep between batches")).toHaveValue("0");
  await expect(page.getByText("never for a dry run")).toBeVisible();
  await console.toggle("Dry run").click();
  await expect(console.field("Sleep between batches")).toHaveValue("250");

  await console.start({ key, dryRun: true, numbers: { "Batch size": "500" } });
  await expect(console.startResult()).toContainText(`Started ${key}:dry-run.`);
  const job = new JobPage(page, `${key}:dry-run`);
  await job.goto();
  await expect(page.getByText("completed", { exact: true }).first()).toBeVisible({ timeout: 30_000 });
  const would = job.would();
  const count = async (which: string) =>
    Number(((await would.locator(`[data-would="${which}"]`).textContent()) ?? "").replace(/,/g, ""));
  await expect(would).toBeVisible();
  const [write, deleted, none] = [await count("write"), await count("deleted"), await count("no-identifiers")];
  expect(write + deleted + none, "every rehearsed user is classified").toBe(DEMO_USERS);
  expect(deleted, "the demo data has deleted users").toBeGreaterThan(0);
  expect(none, "and users with no identifier").toBeGreaterThan(0);
  await expect(page.locator("dl.options")).toContainText("Auto-resumenever for a dry run");
  await screenshots(page, testInfo, "dry-run-would");
});

test("a non-number in a number field shows an error and disables Start", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  await console.fillNumber("Concurrency", "abc");
  const concurrency = page.getByRole("textbox", { name: /^Concurrency/ });
  await expect(concurrency).toHaveAttribute("aria-invalid", "true");
  await expect(page.locator("#concurrency-error")).toContainText("is not a whole number");
  await expect(console.startButton()).toBeDisabled();
  await screenshots(page, testInfo, "form-not-a-number");
  await console.fillNumber("Concurrency", "8");
  await expect(concurrency).toHaveAttribute("aria-invalid", "false");
  await expect(console.startButton()).toBeEnabled();
});
