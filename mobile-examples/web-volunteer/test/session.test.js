// Unit tests of the session rules (node --test): the form check, the shape written for
// sync-core's schema, and "saved" = present at the server's acknowledged heads.
import assert from "node:assert/strict"
import { test } from "node:test"
// The full automerge entry point loads its wasm in Node; the app's slim one then uses it.
import "@automerge/automerge"
import { Automerge as A, encodeHeads } from "@automerge/automerge-repo/slim"
import { checkForm, savedSessionIds } from "../src/session.js"

const form = fields => ({ date: "2026-11-24", attendance: "12", hours: "2,5", note: "", signal: "", ...fields })

test("form check: accepts Dutch decimals, refuses what the schema would refuse", () => {
  const check = (fields, expected) => {
    const { session, errors } = checkForm(form(fields))
    assert.deepEqual(errors ? Object.keys(errors) : session && "ok", expected, JSON.stringify(fields))
  }
  check({}, "ok")
  check({ hours: "3" }, "ok")
  check({ attendance: "0", hours: "0" }, "ok")
  check({ attendance: "2.5" }, ["attendance"])
  check({ attendance: "-1" }, ["attendance"])
  check({ attendance: "" }, ["attendance"])
  check({ hours: "-0,5" }, ["hours"])
  check({ hours: "veel" }, ["hours"])
  check({ date: "2026-02-30" }, ["date"])
  check({ date: "24-11-2026" }, ["date"])
  check({ note: "x".repeat(501) }, ["note"])
})

test("session shape: whole attendance, number hours, lists always written, no empty notes", () => {
  const { session } = checkForm(form({ signal: "  Vraagt naar de voedselbank " }))
  assert.equal(session.attendance, 12)
  assert.ok(Number.isInteger(session.attendance))
  assert.equal(session.volunteer_hours, 2.5)
  assert.deepEqual(session.participants, [])
  assert.deepEqual(session.signals, ["Vraagt naar de voedselbank"])
  assert.equal("notes" in session, false)
  assert.match(session.id, /^[0-9a-f-]{32,36}$/)
  assert.equal(checkForm(form({ note: "Gezellig" })).session.notes, "Gezellig")
})

test("saved means present at the acknowledged heads", () => {
  let doc = A.from({ title: "Koffieochtend", sessions: [] })
  const before = encodeHeads(A.getHeads(doc))
  doc = A.change(doc, d => {
    d.sessions.push(checkForm(form({ note: "eerste" })).session)
  })
  const first = doc.sessions[0].id
  const after = encodeHeads(A.getHeads(doc))
  assert.deepEqual([...savedSessionIds(doc, before)], [])
  assert.deepEqual([...savedSessionIds(doc, after)], [first])
  assert.deepEqual([...savedSessionIds(doc, [])], [])
  // Heads this phone does not hold yet count as nothing acknowledged.
  const other = encodeHeads(A.getHeads(A.change(A.from({ x: 1 }), d => (d.x = 2))))
  assert.deepEqual([...savedSessionIds(doc, other)], [])
})
