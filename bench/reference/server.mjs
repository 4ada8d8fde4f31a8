// The automerge-repo reference sync server, set up the way its own sync-server does it:
// NodeWSServerAdapter on a ws WebSocketServer, NodeFS storage, sharePolicy false (it
// serves documents peers ask for, and announces nothing). No auth, no partitions.
//
//   node server.mjs <storage dir> [port]
//
// Listens on 127.0.0.1 (port 0 = any free port) and prints `listening <port>` once ready;
// stops on SIGTERM / SIGINT.
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

const dir = process.argv[2]
const port = Number(process.argv[3] ?? 0)
if (!dir) {
  console.error("usage: node server.mjs <storage dir> [port]")
  process.exit(2)
}

const wss = new WebSocketServer({ host: "127.0.0.1", port })
const repo = new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `reference-${process.pid}`,
  sharePolicy: async () => false,
})

wss.on("listening", () => {
  console.log(`listening ${wss.address().port}`)
})

const stop = async () => {
  wss.close()
  await repo.shutdown?.()
  process.exit(0)
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
