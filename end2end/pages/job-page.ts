import { expect, type Page } from "@playwright/test";
import { waitForHydration } from "./login-page";

// `/jobs/:key`: one job in full.
export class JobPage {
  constructor(readonly page: Page, readonly jobKey: string) {}

  async goto() {
    await this.page.goto(`/jobs/${this.jobKey}`);
    await expect(this.page.getByRole("heading", { name: "Effective options" })).toBeVisible();
    await waitForHydration(this.page);
  }

  progressBar = () => this.page.getByRole("progressbar", { name: `Coverage of ${this.jobKey}` });
  coverage = () =>
    this.page.locator("section").filter({ has: this.page.getByRole("heading", { name: "Coverage check" }) });
  sparkline = () => this.page.getByRole("img", { name: /^Throughput over the last few minutes/ });
  // The latest run's chart (users/s and the graph's p95), from the samples
  // the runner recorded; `data-points` is how many.
  chart = () => this.page.getByRole("img", { name: /^Rate and graph latency over the run/ });
  async chartPoints(): Promise<number> {
    return Number((await this.chart().getAttribute("data-points")) ?? "0");
  }
  fact = (term: string) => this.page.locator("dl.facts > div").filter({ has: this.page.getByText(term, { exact: true }) }).locator("dd");
  would = () => this.page.getByRole("group", { name: "A real run with these users would" });
  // The job's history: one timeline, newest first; each entry's `data-kind`
  // says what it is (started, resumed, paused, completed, stopped, stop,
  // failed, tuned, notified).
  history = () => this.page.getByRole("region", { name: "History", exact: true });
  historyEntries = (kind?: string) =>
    kind ? this.history().locator(`li[data-kind="${kind}"]`) : this.history().getByRole("listitem");

  classChip = (name: string) =>
    this.page.getByRole("list", { name: "Unresolved failures by class" }).getByRole("button", { name: new RegExp(`^${name}\\b`) });
  failureRows = () => this.page.getByRole("region", { name: "Failures", exact: true }).getByRole("row");
  exportLink = () => this.page.getByRole("link", { name: "Export CSV" });
  retryButton = () => this.page.getByRole("button", { name: "Retry these" });

  async search(text: string) {
    await this.page.getByRole("searchbox", { name: "Search" }).fill(text);
    await this.page.getByRole("button", { name: "Search", exact: true }).click();
  }

  async stop() {
    await this.page.getByRole("button", { name: `Stop ${this.jobKey}` }).click();
    await this.page.getByRole("button", { name: "Confirm stop" }).click();
  }
}
