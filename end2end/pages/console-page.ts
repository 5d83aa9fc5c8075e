import { expect, type Locator, type Page } from "@playwright/test";
import { waitForHydration } from "./login-page";

export class ConsolePage {
  constructor(readonly page: Page) {}

  async goto() {
    await this.page.goto("/");
    await expect(this.page.getByRole("heading", { name: "Start a run" })).toBeVisible();
    await waitForHydration(this.page);
  }

  jobKey = () => this.page.getByLabel("Job key");
  keyToUse = () => this.page.getByTestId("key-to-use");
  field = (label: string) => this.page.getByLabel(label, { exact: false });
  toggle = (name: string) => this.page.getByRole("switch", { name, exact: true });
  startButton = () => this.page.getByRole("button", { name: /^Start (dry )?run$/ });
  jobsTable = () => this.page.getByRole("table");
  jobsHeading = () => this.page.getByRole("heading", { name: "Jobs", exact: true });
  guideLink = () => this.page.getByRole("link", { name: "Operator guide" });
  guideHeading = () => this.page.getByRole("heading", { name: "Operator guide" });
  guideToggle = () => this.page.getByRole("button", { name: /^(Hide|Show) guide$/ });
  // A running job's small chart in its row.
  miniChart = (jobKey: string) => this.row(jobKey).getByRole("img", { name: /^Rate over the run/ });
  startResult = () => this.page.locator(".start-result");

  async fillNumber(label: string, value: string) {
    const input = this.page.getByRole("textbox", { name: new RegExp(`^${label}`) });
    await input.fill(value);
  }

  async start(options: { key?: string; dryRun?: boolean; numbers?: Record<string, string> } = {}) {
    await this.jobKey().fill(options.key ?? "");
    const dryRun = this.toggle("Dry run");
    if ((await dryRun.isChecked()) !== Boolean(options.dryRun)) await dryRun.click();
    for (const [label, value] of Object.entries(options.numbers ?? {})) {
      await this.fillNumber(label, value);
    }
    await this.startButton().click();
  }

  row(jobKey: string): Locator {
    return this.page.getByRole("row").filter({ has: this.page.getByRole("link", { name: jobKey, exact: true }) });
  }

  progressBar(jobKey: string): Locator {
    return this.page.getByRole("progressbar", { name: `Coverage of ${jobKey}` });
  }

  async stop(jobKey: string) {
    const row = this.row(jobKey);
    await row.getByRole("button", { name: `Stop ${jobKey}` }).click();
    await row.getByRole("button", { name: "Confirm stop" }).click();
  }
}
