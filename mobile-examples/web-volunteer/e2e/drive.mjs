#!/usr/bin/env node
// Drives the volunteer web app in real headless Chromium (Debian's /usr/bin/chromium,
// through playwright-core) for the Rust test tests/tests/web_volunteer.rs, which owns
// the server: it starts, stops and restarts it between the steps it asks for here.
//
// Usage: node e2e/drive.mjs <screenshot dir>
// Protocol: one JSON command per line on stdin, one JSON answer per line on stdout:
//   {"cmd":"goto","url":"http://127.0.0.1:PORT/app/"}      -> {"ok":true}
//   {"cmd":"login","code":"ABCD-EFGH"}                     -> {"ok":true}  (enrolment code)
//   {"cmd":"wait-signed-out"}                              -> {"ok":true,"message":…}
//   {"cmd":"enrol-again","code":…}                         -> {"ok":true,"error":…} (refused)
// The coordinator's page /beheer, in a second (desktop-sized) page of the same browser:
//   {"cmd":"beheer-login","url":"http://…","token":"bst_…"} -> {"ok":true,"cookie":{…}}
//   {"cmd":"beheer-invite","name":…,"user":…}              -> {"ok":true,"code":…,"user":…}
//   {"cmd":"beheer-devices"}                               -> {"ok":true,"devices":[{session,user,status}]}
//   {"cmd":"beheer-switch-off","user":…}                   -> {"ok":true}
//   {"cmd":"beheer-screenshot","name":…}                   -> {"ok":true,"path":…}
//   {"cmd":"list"}                                         -> {"ok":true,"items":[{id,title,details}]}
//   {"cmd":"open","id":"<documentId>"}                     -> {"ok":true,"title":…} or {"ok":true,"unavailable":true}
//   {"cmd":"record","date":…,"attendance":…,"hours":…,"note":…,"signal":…}
//                                                          -> {"ok":true,"confirmation":…}
//   {"cmd":"sessions"}                                     -> {"ok":true,"sessions":[{id,note,status}]}
//   {"cmd":"wait-status","note":…,"status":"opgeslagen"}   -> {"ok":true,"sessions":[…]}
//   {"cmd":"wait-offline"} / {"cmd":"wait-online"}         -> {"ok":true}
//   {"cmd":"offline-ready"}  (service worker controls the page, shell cached) -> {"ok":true}
//   {"cmd":"reload"}                                       -> {"ok":true}
//   {"cmd":"screenshot","name":"1-inloggen"}               -> {"ok":true,"path":…}
//   {"cmd":"quit"}                                         -> {"ok":true}, exit 0
// A failing step answers {"ok":false,"error":…}. Browser console errors go to stderr.

import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { chromium } from "playwright-core"

const STEP_MS = Number(process.env.DRIVE_STEP_TIMEOUT_MS ?? 30000)
const shots = process.argv[2]
if (!shots) {
  process.stderr.write("usage: node drive.mjs <screenshot dir>\n")
  process.exit(2)
}
mkdirSync(shots, { recursive: true })

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
})
// A phone-sized window: the app is made for small screens.
const context = await browser.newContext({ viewport: { width: 390, height: 780 }, locale: "nl-NL" })
const page = await context.newPage()
page.setDefaultTimeout(STEP_MS)
page.on("console", msg => {
  if (msg.type() === "error" || msg.type() === "warning") process.stderr.write(`browser ${msg.type()}: ${msg.text()}\n`)
})
page.on("pageerror", err => process.stderr.write(`browser page error: ${err.message}\n`))

/** The app has drawn a screen: the login form, the list, or an activiteit. */
async function appShown() {
  await page.waitForSelector("#login, #activiteiten, #titel, #niet-beschikbaar")
}

let admin = null

async function devices() {
  await admin.goto(admin.url().split("/beheer")[0] + "/beheer")
  return admin.$$eval("table.devices tr[data-session]", rows =>
    rows.map(tr => ({
      session: tr.dataset.session,
      live: tr.classList.contains("live"),
      user: tr.children[1].textContent,
      device: tr.children[0].textContent,
      lastSeen: tr.children[4].textContent,
    })),
  )
}

async function sessions() {
  return page.$$eval("li.sessie", items =>
    items.map(li => ({
      id: li.dataset.sessionId,
      status: li.dataset.status,
      note: li.querySelector(".sessie__notitie")?.textContent ?? "",
    })),
  )
}

const commands = {
  async goto({ url }) {
    await page.goto(url)
    await appShown()
    return {}
  },
  async login({ code }) {
    await page.fill("#code", code)
    await page.click("#login button[type=submit]")
    await page.waitForSelector("#activiteiten")
    return {}
  },
  async "wait-signed-out"() {
    await page.waitForSelector("#afgemeld")
    return { message: await page.textContent("#login .fout") }
  },
  async "enrol-again"({ code }) {
    await page.fill("#code", code)
    await page.click("#login button[type=submit]")
    await page.waitForFunction(() => {
      const t = document.querySelector("#login .fout")?.textContent ?? ""
      return t !== "" && t !== "Even controleren…"
    })
    return { error: await page.textContent("#login .fout"), signedIn: Boolean(await page.$("#activiteiten")) }
  },
  async "beheer-login"({ url, token }) {
    admin ??= await browser.newContext({ viewport: { width: 1200, height: 900 }, locale: "nl-NL" }).then(c => c.newPage())
    admin.setDefaultTimeout(STEP_MS)
    await admin.goto(`${url}/beheer`)
    await admin.fill("#token", token)
    await Promise.all([admin.waitForURL(`${url}/beheer`), admin.click("#login button[type=submit]")])
    await admin.waitForSelector("section.wijk")
    const cookie = (await admin.context().cookies()).find(c => c.name.includes("buurtsync_beheer"))
    const scriptSeesCookie = await admin.evaluate(() => document.cookie.includes("buurtsync_beheer"))
    return { cookie: cookie && { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, path: cookie.path }, scriptSeesCookie }
  },
  async "beheer-invite"({ name, user }) {
    await admin.fill("form.invite input[name=name]", name)
    await admin.fill("form.invite input[name=user]", user ?? "")
    await admin.click("form.invite button[type=submit]")
    await admin.waitForSelector("#enrolment-code")
    return {
      code: (await admin.textContent("#enrolment-code")).trim(),
      user: (await admin.textContent("#invited-user")).trim(),
      qr: Boolean(await admin.$("#enrolment-qr svg")),
    }
  },
  async "beheer-devices"() {
    return { devices: await devices() }
  },
  async "beheer-switch-off"({ user }) {
    await devices()
    const row = admin.locator("table.devices tr.live", { hasText: user })
    await row.locator("button[data-off]").first().click()
    await admin.waitForURL(/\/beheer$/)
    return { devices: await devices() }
  },
  async "beheer-screenshot"({ name }) {
    const path = join(shots, `${name}.png`)
    await admin.screenshot({ path, fullPage: true })
    return { path }
  },
  async list() {
    await page.waitForSelector("#activiteiten")
    // Titles say "Laden…" until the document has arrived.
    await page.waitForFunction(() =>
      [...document.querySelectorAll("#activiteiten .item__titel")].every(t => t.textContent !== "Laden…"),
    )
    const items = await page.$$eval("#activiteiten a.item", links =>
      links.map(a => ({
        id: a.dataset.documentId,
        title: a.querySelector(".item__titel").textContent,
        details: a.querySelector(".item__details").textContent,
      })),
    )
    return { items }
  },
  async open({ id }) {
    await page.evaluate(hash => (location.hash = hash), `#/activiteit/${id}`)
    await page.waitForSelector("#titel, #niet-beschikbaar")
    if (await page.$("#niet-beschikbaar")) return { unavailable: true }
    return { title: await page.textContent("#titel") }
  },
  async record({ date, attendance, hours, note, signal }) {
    await page.fill("#date", date)
    await page.fill("#attendance", String(attendance))
    await page.fill("#hours", String(hours))
    await page.fill("#note", note)
    await page.fill("#signal", signal ?? "")
    await page.click("#sessie-formulier button[type=submit]")
    // The confirmation appears once the change is stored in IndexedDB.
    await page.waitForFunction(() => document.querySelector("#bevestiging")?.textContent.startsWith("Vastgelegd"))
    await page.waitForFunction(
      n => [...document.querySelectorAll(".sessie__notitie")].some(p => p.textContent === n),
      note,
    )
    return { confirmation: await page.textContent("#bevestiging"), sessions: await sessions() }
  },
  async sessions() {
    return { sessions: await sessions() }
  },
  async "wait-status"({ note, status }) {
    await page.waitForFunction(
      ([n, s]) =>
        [...document.querySelectorAll("li.sessie")].some(
          li => li.querySelector(".sessie__notitie")?.textContent === n && li.dataset.status === s,
        ),
      [note, status],
    )
    return { sessions: await sessions() }
  },
  async "wait-offline"() {
    await page.waitForSelector('#verbinding[data-online="false"]')
    return {}
  },
  async "wait-online"() {
    await page.waitForSelector('#verbinding[data-online="true"]')
    return {}
  },
  async "offline-ready"() {
    await page.waitForFunction(async () => {
      const registration = await navigator.serviceWorker?.ready
      return Boolean(registration?.active && navigator.serviceWorker.controller)
    })
    return {}
  },
  async reload() {
    await page.reload()
    await appShown()
    return {}
  },
  async screenshot({ name }) {
    const path = join(shots, `${name}.png`)
    await page.screenshot({ path, fullPage: true })
    return { path }
  },
}

function answer(value) {
  return new Promise(resolve => process.stdout.write(JSON.stringify(value) + "\n", resolve))
}

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  if (!line.trim()) continue
  let command
  try {
    command = JSON.parse(line)
  } catch (e) {
    await answer({ ok: false, error: `not JSON: ${e.message}` })
    continue
  }
  if (command.cmd === "quit") break
  const run = commands[command.cmd]
  if (!run) {
    await answer({ ok: false, error: `unknown command ${command.cmd}` })
    continue
  }
  try {
    await answer({ ok: true, ...(await run(command)) })
  } catch (e) {
    await answer({ ok: false, error: String(e?.message ?? e) })
  }
}
await browser.close()
await answer({ ok: true })
process.exit(0)
