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

  /** Fills and submits the form; does not wait for the outcome. */
  async attemptSignIn(account: { email: string; password: string }) {
    await this.goto();
    await this.email().fill(account.email);
    await this.password().fill(account.password);
    await this.submit().click();
  }

  /** Signs in and waits until the app has loaded the console. */
  async signIn(account: { email: string; password: string }) {
    await this.attemptSignIn(account);
    await this.page.waitForURL((url) => url.pathname === "/");
    await waitForHydration(this.page);
  }
}

// The WASM bundle has hydrated once the Leptos runtime marks the document.
export async function waitForHydration(page: Page) {
  await page.waitForFunction(() => (window as any).__hydrated === true, null, { timeout: 30_000 });
}
