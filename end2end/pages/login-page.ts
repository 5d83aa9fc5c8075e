import { expect, type Page } from "@playwright/test";

export class LoginPage {
  constructor(readonly page: Page) {}

  email = () => this.page.getByLabel("Email");
  password = () => this.page.getByLabel("Password");
  submit = () => this.page.getByRole("button", { name: "Sign in" });

  async goto() {
    await this.page.goto("/login");
    await expect(this.page.getByRole("heading", { name: "Identity Graph Backfill" })).toBeVisible();
    await waitForHydration(this.page);
  }

  async signIn(account: { email: string; password: string }) {
    await this.goto();
    await this.email().fill(account.email);
    await this.password().fill(account.password);
    await this.submit().click();
  }
}

// The WASM bundle has hydrated once the Leptos runtime marks the document.
export async function waitForHydration(page: Page) {
  await page.waitForFunction(() => (window as any).__hydrated === true, null, { timeout: 30_000 });
}
