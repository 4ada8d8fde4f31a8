// Demo client: fetches one document from a buurtsync server with an unmodified
// automerge-repo client and prints it as JSON, or says it is unavailable.
//
//   node tests/js/show.mjs 'ws://127.0.0.1:8080/sync?token=TOKEN' automerge:DOCID
//
// A volunteer token gets "unavailable" for a plan, exactly as for a missing document.
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const [url, docUrl] = process.argv.slice(2)
if (!url || !docUrl) {
  console.error("usage: node show.mjs <ws-url-with-token> <automerge:url>")
  process.exit(2)
}
const repo = new Repo({ network: [new WebSocketClientAdapter(url)] })
const timer = setTimeout(() => {
  console.error("no answer from the server within 10 s")
  process.exit(1)
}, 10_000)
try {
  const handle = await repo.find(docUrl)
  const doc = handle.doc()
  console.log(JSON.stringify(doc, null, 2))
  clearTimeout(timer)
  process.exit(0)
} catch (e) {
  console.error(`${docUrl}: ${e.message}`)
  clearTimeout(timer)
  process.exit(1)
}
