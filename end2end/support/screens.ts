import type { Page, TestInfo } from "@playwright/test";
import fs from "node:fs";
import { expect } from "./fixtures";

export const SIZES = [
  { name: "laptop", width: 1366, height: 768 },
  { name: "phone", width: 390, height: 844 },
];

// Saves a full-page screenshot at laptop and phone sizes, as files under
// end2end/screenshots/ and as attachments of the test, and asserts at both
// sizes that nothing on the page is wider than the viewport.
export async function screenshots(page: Page, testInfo: TestInfo, name: string) {
  fs.mkdirSync("screenshots", { recursive: true });
  const original = page.viewportSize();
  for (const size of SIZES) {
    await page.setViewportSize({ width: size.width, height: size.height });
    await page.waitForTimeout(150);
    const path = `screenshots/${name}-${size.name}.png`;
    await page.screenshot({ path, fullPage: true });
    await testInfo.attach(`${name}-${size.name}`, { path, contentType: "image/png" });
    expect(await elementsWiderThanViewport(page), `${name} at ${size.name} size (${size.width}px)`).toEqual([]);
  }
  if (original) await page.setViewportSize(original);
}

// Every rendered element that reaches past the viewport's left or right edge
// (including inside a scrolling box), and the page itself if it scrolls
// sideways; at most ten, described by tag, id, class and text.
export async function elementsWiderThanViewport(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const found: string[] = [];
    if (document.documentElement.scrollWidth > width) {
      found.push(`the page scrolls sideways: ${document.documentElement.scrollWidth}px > ${width}px`);
    }
    for (const element of Array.from(document.body.querySelectorAll("*"))) {
      const box = element.getBoundingClientRect();
      if (box.width === 0 && box.height === 0) continue;
      if (box.right > width + 0.5 || box.left < -0.5) {
        const id = element.id ? `#${element.id}` : "";
        const classes = typeof element.className === "string" && element.className ? `.${element.className.trim().split(/\s+/).join(".")}` : "";
        const text = (element.textContent ?? "").trim().slice(0, 40);
        found.push(`<${element.tagName.toLowerCase()}${id}${classes}> ${Math.round(box.left)}..${Math.round(box.right)}px "${text}"`);
      }
      if (found.length >= 10) break;
    }
    return found;
  });
}
