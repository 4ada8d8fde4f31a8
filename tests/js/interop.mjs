#!/usr/bin/env node
// Interop check: an unmodified automerge-repo 2.5.x JavaScript client against a
// buurtsync server (or any automerge-repo websocket protocol v1 server).
//
// Usage: node tests/js/interop.mjs <ws-url> <wijk>
//   e.g. node tests/js/interop.mjs 'ws://127.0.0.1:8080/sync?token=TOKEN' wijk-noord
//
// stdout carries JSON lines only, one per event:
//   {"event":"created","documentId":"...","url":"automerge:..."}   as soon as the doc exists
//   {"event":"saw-rust-change","sessions":N}                         then exit 0
//   {"event":"timeout"}                                              then exit 1
// Anything else (bad arguments, a thrown error, an `error` or `doc-unavailable` message
// from the server for our document) goes to stderr and exits 2.
//
// Environment:
//   INTEROP_TIMEOUT_MS  how long to wait for the Rust change (default 30000)
//   INTEROP_DEBUG=1     log every protocol message sent/received to stderr

import { next as A } from "@automerge/automerge"
import { Repo, cbor } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const EXPECTED_NOTES = "door rust toegevoegd"
const DEBUG = process.env.INTEROP_DEBUG === "1"
const TIMEOUT_MS = Number(process.env.INTEROP_TIMEOUT_MS ?? 30000)

let repo
let finished = false

function log(...args) {
  process.stderr.write(`interop: ${args.join(" ")}\n`)
}

function debugLog(...args) {
  if (DEBUG) log(...args)
}

/** Print one line on stdout, then shut the repo down and exit with `code`. */
function finish(code, stdoutLine, stderrLine) {
  if (finished) return
  finished = true
  if (stderrLine) log(stderrLine)
  const exit = () => {
    // Never let a hanging shutdown keep the process alive.
    const hard = setTimeout(() => process.exit(code), 1000)
    hard.unref()
    Promise.resolve()
      .then(() => repo?.shutdown())
      .catch(() => {})
      .finally(() => process.exit(code))
  }
  if (stdoutLine !== undefined) {
    process.stdout.write(JSON.stringify(stdoutLine) + "\n", exit)
  } else {
    exit()
  }
}

function fail(err) {
  const msg = err instanceof Error ? err.stack || err.message : String(err)
  finish(2, undefined, `error: ${msg}`)
}

process.on("uncaughtException", fail)
process.on("unhandledRejection", fail)

/** A short, human-readable summary of a protocol message for the debug log. */
function describe(msg) {
  if (!msg || typeof msg !== "object") return String(msg)
  const parts = [msg.type]
  for (const key of ["senderId", "targetId", "documentId", "selectedProtocolVersion", "message", "count"]) {
    if (msg[key] !== undefined) parts.push(`${key}=${msg[key]}`)
  }
  if (msg.peerMetadata !== undefined)
    parts.push(`peerMetadata=${JSON.stringify(msg.peerMetadata, (_k, v) => (v === undefined ? "<undefined>" : v))}`)
  if (msg.supportedProtocolVersions !== undefined)
    parts.push(`supportedProtocolVersions=${JSON.stringify(msg.supportedProtocolVersions)}`)
  if (msg.data instanceof Uint8Array) parts.push(`data=${msg.data.byteLength}B`)
  if (msg.newHeads !== undefined) parts.push(`newHeads=${JSON.stringify(msg.newHeads, (_k, v) => (typeof v === "bigint" ? `${v}n` : v))}`)
  if (msg.add !== undefined || msg.remove !== undefined)
    parts.push(`add=${JSON.stringify(msg.add)} remove=${JSON.stringify(msg.remove)}`)
  return parts.join(" ")
}

function sessionsOf(doc) {
  return Array.isArray(doc?.sessions) ? doc.sessions : []
}

function sawRustChange(doc) {
  // automerge JS 3 exposes text as a JS string and scalar strings as ImmutableString;
  // String() turns both into the plain value.
  return sessionsOf(doc).some(s => s != null && s.notes != null && String(s.notes) === EXPECTED_NOTES)
}

async function main() {
  const [url, wijk] = process.argv.slice(2)
  if (!url || !wijk) {
    finish(2, undefined, "usage: node interop.mjs <ws-url> <wijk>")
    return
  }
  if (!/^wss?:\/\//.test(url)) {
    finish(2, undefined, `not a websocket url: ${url}`)
    return
  }
  if (!Number.isFinite(TIMEOUT_MS) || TIMEOUT_MS <= 0) {
    finish(2, undefined, `bad INTEROP_TIMEOUT_MS: ${process.env.INTEROP_TIMEOUT_MS}`)
    return
  }

  const adapter = new WebSocketClientAdapter(url)
  let documentId // set once the doc exists; used by the message hooks below
  // Set once a sync message from the server has non-empty heads: the document started
  // here, so any heads the server has descend from our first change.
  let serverHasCreation = false

  // Hook the adapter so we can see (and react to) every protocol message.
  // `peer` and `error` never leave the adapter, so receiveMessage is the place to look.
  const origSend = adapter.send.bind(adapter)
  adapter.send = message => {
    debugLog(`send ${describe(message)}`)
    return origSend(message)
  }
  const origReceive = adapter.receiveMessage.bind(adapter)
  adapter.receiveMessage = bytes => {
    let msg
    try {
      msg = cbor.decode(new Uint8Array(bytes))
    } catch (e) {
      log(`received an undecodable frame (${bytes?.byteLength} bytes): ${e}`)
    }
    if (msg) {
      debugLog(`recv ${describe(msg)}`)
      if (msg.type === "peer") {
        log(`joined server peer ${msg.senderId} (protocol ${msg.selectedProtocolVersion})`)
      } else if (msg.type === "error") {
        finish(2, undefined, `server sent error: ${msg.message}`)
        return
      } else if (msg.type === "doc-unavailable" && documentId && msg.documentId === documentId) {
        finish(2, undefined, `server answered doc-unavailable for our document ${documentId}`)
        return
      } else if (msg.type === "sync" && msg.documentId === documentId && !serverHasCreation) {
        try {
          const theirHeads = A.decodeSyncMessage(msg.data).heads
          if (theirHeads.length > 0) {
            serverHasCreation = true
            log(`server has our document (heads ${theirHeads.join(",")})`)
          }
        } catch (e) {
          log(`could not decode a sync message from the server: ${e}`)
        }
      }
    }
    return origReceive(bytes)
  }

  repo = new Repo({ network: [adapter] })

  const handle = repo.create({
    meta: { kind: "activiteit", wijk, schema: 1 },
    title: "Koffieochtend De Kiem",
    type: "ontmoeting",
    location: "Wijkcentrum De Kiem",
    organisers: [],
    volunteers: [],
    schedule: "wekelijks dinsdag 10:00",
    sessions: [],
  })
  documentId = handle.documentId
  await new Promise(resolve =>
    process.stdout.write(
      JSON.stringify({ event: "created", documentId: handle.documentId, url: handle.url }) + "\n",
      resolve,
    ),
  )

  const check = doc => {
    if (finished || !sawRustChange(doc)) return
    finish(0, { event: "saw-rust-change", sessions: sessionsOf(doc).length })
  }
  handle.on("change", ({ doc }) => {
    debugLog(`document changed, ${sessionsOf(doc).length} session(s)`)
    check(doc)
  })
  check(handle.doc())

  setTimeout(() => {
    const doc = handle.doc()
    const notes = sessionsOf(doc).map(s => String(s?.notes))
    finish(
      1,
      { event: "timeout" },
      `no session with notes "${EXPECTED_NOTES}" after ${TIMEOUT_MS} ms ` +
        `(peers: ${JSON.stringify(repo.peers)}, server confirmed our document: ${serverHasCreation}, ` +
        `sessions: ${notes.length}, notes: ${JSON.stringify(notes)})`,
    )
  }, TIMEOUT_MS)
}

main().catch(fail)
