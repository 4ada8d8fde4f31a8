// Browser test of the central office's dashboard in real headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core). Started by the Rust e2e test
// tests/tests/central_office.rs, which runs the server and seeds the data:
//
//   node dashboard.mjs <base url> <central-office token> <output dir>
//
// Logs in through the form, waits for the charts, checks one section with charts per
// wijk, downloads the CSV, saves a screenshot, and prints one JSON line of what it saw
// (the Rust test asserts on it). Exits non-zero on any failure.
import { chromium } from "playwright-core"
import { mkdirSync, readFileSync } from "node:fs"
import { join } from "node:path"

const [base, token, outDir] = process.argv.slice(2)
if (!base || !token || !outDir) {
  console.error("usage: node dashboard.mjs <base url> <token> <output dir>")
  process.exit(2)
}
mkdirSync(outDir, { recursive: true })

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  timeout: 30000,
})
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 900 } })
  const page = await context.newPage()
  page.setDefaultTimeout(15000)
  const scriptErrors = []
  page.on("pageerror", (e) => scriptErrors.push(String(e)))

  await page.goto(`${base}/dashboard`)
  await page.fill("#token", token)
  await Promise.all([page.waitForURL(`${base}/dashboard`), page.click("#login button[type=submit]")])
  await page.waitForSelector("section.wijk svg.chart")

  const sections = await page.$$eval("section.wijk", (els) =>
    els.map((s) => ({
      wijk: s.dataset.wijk,
      charts: s.querySelectorAll("svg.chart").length,
      bars: s.querySelectorAll("svg.chart rect.bar").length,
      suppressed: s.querySelectorAll("svg.chart rect.suppressed").length,
      // Per chart (by id), for the outcome charts' assertions.
      byChart: Object.fromEntries([...s.querySelectorAll("svg.chart")].map((c) => [c.id, {
        bars: c.querySelectorAll("rect.bar").length,
        suppressed: c.querySelectorAll("rect.suppressed").length,
      }])),
      // Rendered: the browser laid the chart out with a real size.
      rendered: [...s.querySelectorAll("svg.chart")].every((c) => c.getBoundingClientRect().width > 100),
    })))
  const pageText = await page.textContent("body")
  const cookies = await context.cookies()
  const session = cookies.find((c) => c.name === "buurtsync_dashboard")
  const scriptSeesCookie = await page.evaluate(() => document.cookie.includes("buurtsync_dashboard"))

  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download-csv")])
  const csvPath = join(outDir, "dashboard-aggregates.csv")
  await download.saveAs(csvPath)
  const csv = readFileSync(csvPath)

  const screenshot = join(outDir, "dashboard.png")
  await page.screenshot({ path: screenshot, fullPage: true })

  console.log(JSON.stringify({
    sections,
    pageText,
    cookie: session ? { httpOnly: session.httpOnly, sameSite: session.sameSite, path: session.path } : null,
    scriptSeesCookie,
    csvFile: csvPath,
    csvBom: csv[0] === 0xef && csv[1] === 0xbb && csv[2] === 0xbf,
    csvSuggestedName: download.suggestedFilename(),
    screenshot,
    scriptErrors,
  }))
} finally {
  await browser.close()
}
