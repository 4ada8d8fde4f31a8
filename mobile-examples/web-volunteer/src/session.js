// One bijeenkomst (session) of an activiteit: checking the form, writing it into the
// automerge document in the shape sync-core's schema expects, and whether the server
// has it.
//
// Schema contract (sync-core/src/schema/activiteit.rs): `id` and `date` (YYYY-MM-DD)
// strings, `attendance` a whole number >= 0 (JS integers are stored as automerge ints),
// `volunteer_hours` a finite number >= 0, optional `notes`, and the lists
// `participants` and `signals` always written, even empty, so two phones adding the
// first item do not create competing lists.

import { Automerge as A, decodeHeads } from "@automerge/automerge-repo/slim"

export const MAX_NOTE = 500
const MAX_ATTENDANCE = 10000
const MAX_HOURS = 1000

/** Today as YYYY-MM-DD in the phone's time zone. */
export function today() {
  const d = new Date()
  const pad = n => String(n).padStart(2, "0")
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`
}

function isRealDate(s) {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(s)) return false
  const [y, m, d] = s.split("-").map(Number)
  const date = new Date(Date.UTC(y, m - 1, d))
  return date.getUTCFullYear() === y && date.getUTCMonth() === m - 1 && date.getUTCDate() === d
}

/**
 * Checks the form's raw strings; returns `{session}` ready to store or `{errors}`
 * (field name -> Dutch message).
 */
export function checkForm({ date, attendance, hours, note, signal }) {
  const errors = {}
  if (!isRealDate(date)) errors.date = "Kies een datum."
  const count = Number(attendance)
  if (attendance.trim() === "" || !Number.isInteger(count) || count < 0 || count > MAX_ATTENDANCE)
    errors.attendance = "Vul een heel aantal in (0 of meer)."
  const h = Number(hours.replace(",", "."))
  if (hours.trim() === "" || !Number.isFinite(h) || h < 0 || h > MAX_HOURS)
    errors.hours = "Vul het aantal uren in (0 of meer, bijvoorbeeld 2,5)."
  if (note.length > MAX_NOTE) errors.note = `Maximaal ${MAX_NOTE} tekens.`
  if (signal.length > MAX_NOTE) errors.signal = `Maximaal ${MAX_NOTE} tekens.`
  if (Object.keys(errors).length > 0) return { errors }
  const session = {
    id: newId(),
    date,
    attendance: count,
    participants: [],
    volunteer_hours: h,
    signals: signal.trim() ? [signal.trim()] : [],
  }
  if (note.trim()) session.notes = note.trim()
  return { session }
}

function newId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID()
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  return Array.from(bytes, b => b.toString(16).padStart(2, "0")).join("")
}

/** Appends a session to the activiteit in one automerge change. */
export function addSession(handle, session) {
  handle.change(doc => {
    if (!Array.isArray(doc.sessions)) doc.sessions = []
    doc.sessions.push(session)
  })
}

/** The sessions of a document, newest date first, with plain string fields. */
export function sessionsOf(doc) {
  const list = Array.isArray(doc?.sessions) ? doc.sessions : []
  return list
    .filter(s => s && typeof s === "object")
    .map(s => ({
      id: String(s.id ?? ""),
      date: String(s.date ?? ""),
      attendance: Number(s.attendance ?? 0),
      hours: Number(s.volunteer_hours ?? 0),
      notes: s.notes == null ? "" : String(s.notes),
      signals: Array.isArray(s.signals) ? s.signals.map(String) : [],
    }))
    .sort((a, b) => (a.date < b.date ? 1 : a.date > b.date ? -1 : 0))
}

/**
 * The ids of the sessions the server has committed: those present in the document as
 * of the heads the server acknowledged. Heads we do not hold yet (changes from other
 * phones still on their way) count as nothing acknowledged.
 */
export function savedSessionIds(doc, ackedHeads) {
  if (!doc || !ackedHeads || ackedHeads.length === 0) return new Set()
  try {
    const atServer = A.view(doc, decodeHeads(ackedHeads))
    return new Set(sessionsOf(atServer).map(s => s.id))
  } catch {
    return new Set()
  }
}
