// The volunteer web app: sign in with the enrolment code from your coordinator (typed,
// or from the QR code's link `/app/#enrol=CODE`), see the activiteiten of your
// wijk(en), open one and record a bijeenkomst (session), online or not. The device
// session's access token is refreshed before it runs out and whenever the connection
// drops; a refused refresh means the device was switched off: everything local is
// wiped and the signed-out view shown.
//
// Routes live in the URL fragment (#/ and #/activiteit/<documentId>), so the server
// serves static files only and a reload offline comes from the service worker's cache.
// Every text from a document goes into the page with textContent, never as HTML.

import "./style.css"
import { initializeWasm } from "@automerge/automerge-repo/slim"
// automerge's wasm as its own file: compiled while it streams in, cached by the worker.
import automergeWasmUrl from "@automerge/automerge/automerge.wasm?url"
import * as api from "./api.js"
import { Sync } from "./sync.js"
import { MAX_NOTE, addSession, checkForm, savedSessionIds, sessionsOf, today } from "./session.js"

const root = document.getElementById("app")
const connection = document.getElementById("verbinding")
let sync = null
/** Stops the current view's listeners when another view is rendered. */
let leaveView = () => {}

/** Builds an element: h("p", {class: "x"}, "text", child). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value)
    else el.setAttribute(key, value === true ? "" : value)
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue
    el.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
  return el
}

function show(...children) {
  leaveView()
  leaveView = () => {}
  root.replaceChildren(...children)
  root.focus()
}

function showConnection() {
  // Before login there is no connection to speak of.
  connection.hidden = !sync
  const online = Boolean(sync?.online)
  connection.dataset.online = String(online)
  connection.textContent = online ? "Verbonden" : "Offline"
}

const dateFormat = new Intl.DateTimeFormat("nl-NL", {
  weekday: "short",
  day: "numeric",
  month: "long",
  year: "numeric",
  timeZone: "UTC",
})
const hoursFormat = new Intl.NumberFormat("nl-NL", { maximumFractionDigits: 2 })

function formatDate(iso) {
  const [y, m, d] = iso.split("-").map(Number)
  const date = new Date(Date.UTC(y, m - 1, d))
  return Number.isNaN(date.getTime()) ? iso : dateFormat.format(date)
}

// ---------------------------------------------------------------- sign in

/** A name for this device on the coordinator's page. */
function deviceName() {
  const ua = navigator.userAgent
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Linux/.test(ua) ? "Linux" : "browser"
  return `Web-app (${os})`
}

function renderLogin(message, { code = "", signedOut = false } = {}) {
  const input = h("input", {
    id: "code",
    name: "code",
    type: "text",
    autocomplete: "one-time-code",
    autocapitalize: "characters",
    required: true,
    spellcheck: "false",
    maxlength: "12",
    value: code,
    "aria-describedby": "code-hulp",
  })
  const error = h("p", { class: "fout", role: "alert" }, message ?? "")
  const form = h(
    "form",
    { class: "kaart", id: "login", "data-signed-out": signedOut ? "true" : null },
    signedOut ? h("h2", { id: "afgemeld" }, "Afgemeld") : h("h2", {}, "Aanmelden"),
    h("label", { for: "code" }, "Code van je coördinator"),
    input,
    h("p", { id: "code-hulp", class: "hulp" }, "8 tekens, bijvoorbeeld ABCD-EFGH. De code werkt één keer en kort."),
    error,
    h("button", { type: "submit", class: "knop knop--hoofd" }, "Aanmelden"),
  )
  form.addEventListener("submit", async event => {
    event.preventDefault()
    const typed = input.value.trim()
    if (!typed) return
    error.textContent = "Even controleren…"
    try {
      const answer = await api.enrol(typed, deviceName())
      start(answer.access_token, null)
      await api.refreshMe()
      route()
    } catch (e) {
      error.textContent = e.message
    }
  })
  show(form)
}

// ---------------------------------------------------------------- list

async function renderList() {
  const me = api.cachedMe()
  const wijken = me?.wijken ?? []
  const names = Object.fromEntries(wijken.map(w => [w.wijk, w.name]))
  const status = h("p", { class: "hulp", role: "status" }, "Activiteiten laden…")
  const list = h("ul", { class: "lijst", id: "activiteiten" })
  const logout = h("button", { type: "button", class: "knop knop--licht", id: "uitloggen" }, "Uitloggen")
  const logoutMessage = h("p", { class: "fout", role: "alert" })
  show(
    h(
      "section",
      {},
      h("h2", {}, wijken.length === 1 ? `Activiteiten in ${wijken[0].name}` : "Activiteiten in jouw wijken"),
      status,
      list,
      h("div", { class: "voet" }, h("span", { class: "hulp" }, `Ingelogd als ${me?.user ?? "?"}`), logout, logoutMessage),
    ),
  )
  let active = true
  leaveView = () => {
    active = false
  }
  logout.addEventListener("click", () => logOut(logoutMessage))

  let found
  try {
    found = await api.listActiviteiten()
  } catch (e) {
    if (!active) return
    if (e.kind === "revoked") return signedOut(e.message)
    status.textContent = e.message
    return
  }
  if (!active) return
  const { list: docs, fresh } = found
  status.textContent =
    docs.length === 0
      ? "Er zijn nog geen activiteiten in jouw wijk."
      : fresh
        ? ""
        : "Geen verbinding: dit is de lijst van de laatste keer."
  for (const doc of docs) {
    const title = h("span", { class: "item__titel" }, "Laden…")
    const details = h("span", { class: "item__details" }, names[doc.wijk] ?? doc.wijk)
    const item = h(
      "li",
      {},
      h("a", { class: "item", href: `#/activiteit/${doc.id}`, "data-document-id": doc.id }, title, details),
    )
    list.append(item)
    sync.open(doc.id).then(handle => {
      if (!active) return
      const d = handle?.doc()
      if (!d || String(d.meta?.kind) !== "activiteit") {
        item.remove()
        return
      }
      title.textContent = String(d.title ?? "Activiteit")
      const sessions = sessionsOf(d)
      const saved = savedSessionIds(d, sync.ackedHeads(doc.id))
      const unsent = sessions.filter(s => !saved.has(s.id)).length
      details.textContent = [
        d.location ? String(d.location) : names[doc.wijk] ?? doc.wijk,
        `${sessions.length} ${sessions.length === 1 ? "bijeenkomst" : "bijeenkomsten"}`,
        unsent > 0 ? `${unsent} nog niet verzonden` : null,
      ]
        .filter(Boolean)
        .join(" · ")
    })
  }
}

async function logOut(message) {
  const me = api.cachedMe()
  let unsent = 0
  for (const id of sync.watched) {
    const handle = await sync.open(id)
    const d = handle?.doc()
    if (!d) continue
    const saved = savedSessionIds(d, sync.ackedHeads(id))
    unsent += sessionsOf(d).filter(s => !saved.has(s.id)).length
  }
  if (unsent > 0) {
    message.textContent = `Er ${unsent === 1 ? "is nog 1 bijeenkomst" : `zijn nog ${unsent} bijeenkomsten`} niet verzonden. Maak eerst verbinding, dan kun je uitloggen.`
    return
  }
  await api.endSession()
  stopKeepingFresh()
  await sync.wipe()
  api.forget()
  console.info(`logged out ${me?.user}`)
  location.hash = ""
  location.reload()
}

// ---------------------------------------------------------------- one activiteit

async function renderActiviteit(documentId) {
  const back = h("a", { href: "#/", class: "terug" }, "← Alle activiteiten")
  show(h("section", {}, back, h("p", { class: "hulp", role: "status" }, "Activiteit openen…")))
  let active = true
  leaveView = () => {
    active = false
  }
  const handle = await sync.open(documentId)
  if (!active) return
  const doc = handle?.doc()
  // The server never gives a volunteer a plan; the app refuses to show one anyway.
  if (!doc || String(doc.meta?.kind) !== "activiteit") {
    show(
      h(
        "section",
        { id: "niet-beschikbaar" },
        back,
        h("h2", {}, "Niet beschikbaar"),
        h("p", {}, "Deze activiteit bestaat niet of je hebt er geen toegang toe."),
      ),
    )
    return
  }

  const sessionList = h("ol", { class: "sessies", id: "sessies" })
  const form = sessionForm(handle)
  const info = [doc.type, doc.location, doc.schedule].filter(Boolean).map(String).join(" · ")
  const title = h("h2", { id: "titel" }, String(doc.title ?? "Activiteit"))
  show(
    h(
      "section",
      {},
      back,
      title,
      info ? h("p", { class: "hulp" }, info) : null,
      form,
      h("h3", {}, "Bijeenkomsten"),
      sessionList,
    ),
  )

  const refresh = () => {
    const d = handle.doc()
    title.textContent = String(d.title ?? "Activiteit")
    const saved = savedSessionIds(d, sync?.ackedHeads(documentId) ?? [])
    const sessions = sessionsOf(d)
    sessionList.replaceChildren(
      ...(sessions.length === 0
        ? [h("li", { class: "hulp" }, "Nog geen bijeenkomsten vastgelegd.")]
        : sessions.map(s => sessionItem(s, saved.has(s.id)))),
    )
  }
  const onAck = event => {
    if (event.detail === documentId) refresh()
  }
  handle.on("change", refresh)
  // The view may be left after a sign-out has dropped `sync`: keep this one.
  const current = sync
  current.addEventListener("acked", onAck)
  leaveView = () => {
    active = false
    handle.off("change", refresh)
    current.removeEventListener("acked", onAck)
  }
  refresh()
}

function sessionItem(s, saved) {
  const status = saved ? "opgeslagen" : "nog niet verzonden"
  return h(
    "li",
    { class: "sessie", "data-session-id": s.id, "data-status": saved ? "opgeslagen" : "nog-niet-verzonden" },
    h(
      "div",
      { class: "sessie__kop" },
      h("strong", {}, formatDate(s.date)),
      h("span", { class: `status status--${saved ? "ok" : "wacht"}` }, status),
    ),
    h(
      "p",
      { class: "sessie__cijfers" },
      `${s.attendance} ${s.attendance === 1 ? "deelnemer" : "deelnemers"} · ${hoursFormat.format(s.hours)} uur inzet`,
    ),
    s.notes ? h("p", { class: "sessie__notitie" }, s.notes) : null,
    ...s.signals.map(signal => h("p", { class: "sessie__signaal" }, h("strong", {}, "Signaal: "), signal)),
  )
}

function field(name, label, input, hint) {
  const error = h("span", { class: "fout", id: `${name}-fout` })
  input.setAttribute("id", name)
  input.setAttribute("name", name)
  input.setAttribute("aria-describedby", `${name}-fout`)
  return {
    error,
    el: h("div", { class: "veld" }, h("label", { for: name }, label), hint ? h("span", { class: "hulp" }, hint) : null, input, error),
  }
}

function sessionForm(handle) {
  const fields = {
    date: field("date", "Datum", h("input", { type: "date", value: today(), required: true })),
    attendance: field(
      "attendance",
      "Aantal deelnemers",
      h("input", { type: "number", inputmode: "numeric", min: "0", step: "1", required: true }),
    ),
    hours: field(
      "hours",
      "Uren inzet vrijwilligers",
      h("input", { type: "text", inputmode: "decimal", required: true, placeholder: "bijv. 2,5" }),
    ),
    note: field("note", "Korte notitie", h("textarea", { rows: "3", maxlength: String(MAX_NOTE) })),
    signal: field(
      "signal",
      "Signaal voor het buurtteam",
      h("textarea", { rows: "2", maxlength: String(MAX_NOTE) }),
      "Optioneel: iets waar het buurtteam iets mee moet. Noem alleen namen als het nodig is.",
    ),
  }
  const done = h("p", { class: "gelukt", role: "status", id: "bevestiging" })
  const form = h(
    "form",
    { class: "kaart", id: "sessie-formulier", novalidate: true },
    h("h3", {}, "Bijeenkomst vastleggen"),
    ...Object.values(fields).map(f => f.el),
    h("button", { type: "submit", class: "knop knop--hoofd" }, "Bijeenkomst opslaan"),
    done,
  )
  form.addEventListener("submit", async event => {
    event.preventDefault()
    const raw = Object.fromEntries(Object.keys(fields).map(k => [k, form.elements[k].value]))
    const { session, errors } = checkForm(raw)
    for (const [name, f] of Object.entries(fields)) f.error.textContent = errors?.[name] ?? ""
    if (errors) {
      done.textContent = ""
      form.elements[Object.keys(errors)[0]].focus()
      return
    }
    addSession(handle, session)
    for (const name of ["attendance", "hours", "note", "signal"]) form.elements[name].value = ""
    done.textContent = ""
    // Confirm only once the change is in IndexedDB: then a reload or a closed tab
    // cannot lose it.
    await sync.repo.flush([handle.documentId])
    done.textContent = sync.online
      ? "Vastgelegd op deze telefoon en onderweg naar de server."
      : "Vastgelegd op deze telefoon. Wordt verzonden zodra er verbinding is."
  })
  return form
}

// ---------------------------------------------------------------- start

function route() {
  if (!sync) return
  const match = location.hash.match(/^#\/activiteit\/([1-9A-HJ-NP-Za-km-z]+)$/)
  if (match) renderActiviteit(match[1])
  else renderList()
}

/**
 * The device was switched off (or its session ended otherwise): nothing may stay on a
 * phone that is perhaps lost. Stop syncing, wipe the documents and the cache, say so.
 */
async function signedOut(message) {
  stopKeepingFresh()
  const old = sync
  sync = null
  showConnection()
  await old?.wipe()
  api.forget()
  renderLogin(message ?? "Dit apparaat is afgemeld. Vraag je coördinator om een nieuwe code.", { signedOut: true })
}

let freshTimer = null
let checking = false

/**
 * Keeps a live access token for the websocket: before it runs out, and while the
 * connection is down (the server refuses a token it revoked or that ran out: only a
 * refresh tells "switched off" from "offline").
 */
async function keepFresh() {
  if (checking || !sync) return
  checking = true
  try {
    const token = sync.online ? await api.accessToken() : await api.refresh()
    sync?.setToken(token)
  } catch (e) {
    if (e.kind === "revoked") await signedOut(e.message)
  } finally {
    checking = false
  }
}

function stopKeepingFresh() {
  clearInterval(freshTimer)
  freshTimer = null
}

function start(token, me) {
  sync = new Sync(token, me?.storage_id ?? api.cachedMe()?.storage_id)
  sync.addEventListener("connection", () => {
    showConnection()
    // A dropped connection may be an access token that ran out (4401) or a device
    // that was switched off: find out now, before the adapter reconnects.
    if (sync && !sync.online) keepFresh()
  })
  stopKeepingFresh()
  freshTimer = setInterval(keepFresh, 5000)
  showConnection()
}

/** `#enrol=CODE` from the QR code: taken out of the address at once. */
function codeFromLink() {
  const match = location.hash.match(/^#enrol=([0-9A-Za-z-]{4,16})$/)
  if (!match) return null
  history.replaceState(null, "", location.pathname + location.search)
  return match[1]
}

async function main() {
  await initializeWasm(fetch(automergeWasmUrl))
  window.addEventListener("hashchange", route)
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register(`${import.meta.env.BASE_URL}sw.js`, { scope: import.meta.env.BASE_URL }).catch(e => {
      console.warn("service worker not registered", e)
    })
  }
  // A token from the old app (pasted, long-lived) is dropped: it must not stay here.
  localStorage.removeItem("buurtsync.token")
  const code = codeFromLink()
  showConnection()
  if (code || !api.enrolled()) return renderLogin(null, { code: code ?? "" })
  // Offline there is no access token yet: the app opens from the local store and the
  // token is fetched once the server answers.
  const token = await api.accessToken().catch(e => {
    if (e.kind === "revoked") return "revoked"
    return null
  })
  if (token === "revoked") return signedOut()
  start(token, api.cachedMe())
  route()
  try {
    await api.refreshMe()
  } catch (e) {
    if (e.kind === "revoked") signedOut(e.message)
  }
}

main().catch(e => {
  root.replaceChildren(h("p", { class: "fout" }, `De app kon niet starten: ${e.message}`))
})
