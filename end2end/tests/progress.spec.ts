import { expect, test } from "../support/fixtures";
import { ConsolePage } from "../pages/console-page";
import { JobPage } from "../pages/job-page";
import { LoginPage } from "../pages/login-page";
import { ALLOWED } from "../support/accounts";
import { screenshots } from "../support/screens";

const KEY = "e2e-progress";
// Slow enough to watch for a while: 20 users every ~half second.
const PACED = { "Batch size": "20", "Sleep between batches": "400", Concurrency: "2" };

test("a running job shows its progress as bars, a chart of its rate and the tab title", async ({ page }, testInfo) => {
  await new LoginPage(page).signIn(ALLOWED);
  const console = new ConsolePage(page);
  await console.goto();
  await console.start({ key: KEY, numbers: PACED });
  await expect(console.startResult()).toContainText(`Started ${KEY}.`);

  // Every row has a bar; the running one says how much of the source is covered.
  const rows = page.getByRole("row").filter({ has: page.getByRole("link") });
  // The list refetches after the start: count once the new job's row is in.
  await expect(console.row(KEY)).toBeVisible();
  await expect(page.getByRole("progressbar")).toHaveCount(await rows.count());
  await expect(console.progressBar(KEY)).toHaveAttribute("aria-valuetext", /% of the source covered/, { timeout: 15_000 });
  await expect(page).toHaveTitle(new RegExp(`^▶ ~?(<1|\\d+)% · ${KEY}`));
  await screenshots(page, testInfo, "progress-console");

  const job = new JobPage(page, KEY);
  await job.goto();
  await expect(job.progressBar()).toHaveAttribute("aria-valuenow", /^\d+$/, { timeout: 15_000 });
  await expect(page).toHaveTitle(new RegExp(`^▶ ~?(<1|\\d+)% · ${KEY}$`));

  // Two samples of the bar, seconds apart: it advances, and each time the
  // title's percent is the bar's (`<1%` is a bar at 0 of a started run).
  const sample = async () => {
    const { now, title } = await page.evaluate((key) => {
      const bar = document.querySelector(`[role="progressbar"][aria-label="Coverage of ${key}"]`);
      return { now: bar?.getAttribute("aria-valuenow") ?? null, title: document.title };
    }, KEY);
    const percent = title.match(new RegExp(`^▶ ~?(<1|\\d+)% · ${KEY}$`))?.[1];
    return {
      bar: now === null ? NaN : Number(now),
      title: percent === undefined ? NaN : percent === "<1" ? 0 : Number(percent),
      text: `bar ${now}, title "${title}"`,
    };
  };
  // The title is written by an effect after the bar renders: a sample taken
  // between the two may disagree for a moment.
  const settled = async () => {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const s = await sample();
      if (s.bar === s.title || Date.now() > deadline) return s;
      await page.waitForTimeout(100);
    }
  };
  const first = await settled();
  expect(first.title, `the title's percent is the bar's: ${first.text}`).toBe(first.bar);
  let second = first;
  await expect
    .poll(async () => (second = await settled()).bar, { timeout: 20_000, message: "the bar advances" })
    .toBeGreaterThan(first.bar);
  expect(second.title, `the title's percent is the bar's: ${second.text}`).toBe(second.bar);

  // The chart of the run so far: its heartbeat records a point about every
  // second at first; it has measured a rate above 0.
  await expect.poll(() => job.chartPoints(), { timeout: 15_000 }).toBeGreaterThanOrEqual(2);
  const label = (await job.chart().getAttribute("aria-label")) ?? "";
  const peak = Number(label.match(/peak ([\d,]+) users\/s/)?.[1]?.replace(/,/g, "") ?? NaN);
  expect(peak, label).toBeGreaterThan(0);
  await screenshots(page, testInfo, "progress-job-running");

  await job.stop();
  await expect(page).toHaveTitle(`◼ stopped · ${KEY}`, { timeout: 15_000 });
  // The chart stays once the run has ended.
  await expect(job.chart()).toBeVisible();
});
