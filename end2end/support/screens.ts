import type { Page, TestInfo } from "@playwright/test";
import fs from "node:fs";

const SIZES = [
  { name: "laptop", width: 1366, height: 768 },
  { name: "phone", width: 390, height: 844 },
];

// Saves a full-page screenshot at laptop and phone sizes, as files under
// end2end/screenshots/ and as attachments of the test.
export async function screenshots(page: Page, testInfo: TestInfo, name: string) {
  fs.mkdirSync("screenshots", { recursive: true });
  const original = page.viewportSize();
  for (const size of SIZES) {
    await page.setViewportSize({ width: size.width, height: size.height });
    await page.waitForTimeout(150);
    const path = `screenshots/${name}-${size.name}.png`;
    await page.screenshot({ path, fullPage: true });
    await testInfo.attach(`${name}-${size.name}`, { path, contentType: "image/png" });
  }
  if (original) await page.setViewportSize(original);
}
