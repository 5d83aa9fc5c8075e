// The suite's `test`: every spec imports it from here, so every page a test
// opens is watched. Any console error or warning, and any uncaught
// exception, fails the test once it has finished, listed with where it came
// from. A spec that expects a specific message (the browser logs a failed
// request, e.g. the 401 of a wrong password) names it with
// `test.use({ expectedConsoleMessages: [/…/] })`; nothing else is allowed.
import { expect, test as base } from "@playwright/test";

type ConsoleOptions = { expectedConsoleMessages: RegExp[] };

export const test = base.extend<ConsoleOptions>({
  expectedConsoleMessages: [[], { option: true }],
  page: async ({ page, expectedConsoleMessages }, use) => {
    const problems: string[] = [];
    page.on("console", (message) => {
      const type = message.type();
      if (type !== "error" && type !== "warning") return;
      const text = message.text();
      if (expectedConsoleMessages.some((expected) => expected.test(text))) return;
      const { url, lineNumber } = message.location();
      problems.push(`${type}: ${text}${url ? ` (${url}:${lineNumber})` : ""}`);
    });
    page.on("pageerror", (error) => problems.push(`uncaught: ${error.message}`));
    await use(page);
    expect(problems, "the browser console must have no errors or warnings").toEqual([]);
  },
});

export { expect };
