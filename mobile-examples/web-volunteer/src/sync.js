// The automerge-repo side: one Repo per logged-in volunteer, syncing with the buurtsync
// server over its websocket (automerge-repo protocol v1, the device session's
// short-lived access token in the query string as browsers cannot set headers) and
// keeping every document in IndexedDB, so the app works offline. When the access token
// is refreshed, `setToken` points the adapter's next (re)connect at the new one: the
// server closes a socket whose token ran out (4401) and the adapter reconnects.
//
// Durability: the server sends `remote-heads-changed` with its own storageId only after
// a change is committed to its database (and the heads in its sync messages are
// committed heads too). automerge-repo turns both into a handle's `remote-heads` event.
// We keep the last heads the server acknowledged per document in localStorage, so
// "opgeslagen" versus "nog niet verzonden" survives a reload without network.

import { Repo, isValidDocumentId } from "@automerge/automerge-repo/slim"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { IndexedDBStorageAdapter } from "@automerge/automerge-repo-storage-indexeddb"

const KEY_SERVER = "buurtsync.server-storage-id"
const ackKey = documentId => `buurtsync.acked.${documentId}`
export const DATABASE = "buurtsync-vrijwilliger"
/** Reconnect attempts while offline: often enough to notice the wijkcentrum's wifi. */
const RETRY_MS = 2000
/** How long opening a document may take before we say it is not available. */
const FIND_TIMEOUT_MS = 15000

export class Sync extends EventTarget {
  /** @param token an access token (null offline); @param storageId the server's, if known */
  constructor(token, storageId) {
    super()
    this.serverStorageId = storageId || localStorage.getItem(KEY_SERVER)
    this.online = false
    this.adapter = new WebSocketClientAdapter(Sync.#url(token), RETRY_MS)
    this.repo = new Repo({
      network: [this.adapter],
      storage: new IndexedDBStorageAdapter(DATABASE),
      enableRemoteHeadsGossiping: true,
    })
    if (this.serverStorageId) this.repo.subscribeToRemotes([this.serverStorageId])
    this.repo.networkSubsystem.on("peer", ({ peerMetadata }) => {
      const storageId = peerMetadata?.storageId
      if (storageId && storageId !== this.serverStorageId) {
        this.serverStorageId = storageId
        localStorage.setItem(KEY_SERVER, storageId)
        this.repo.subscribeToRemotes([storageId])
      }
      this.#setOnline(true)
    })
    this.repo.networkSubsystem.on("peer-disconnected", () => this.#setOnline(false))
    this.watched = new Set()
  }

  static #url(token) {
    const scheme = location.protocol === "https:" ? "wss" : "ws"
    return `${scheme}://${location.host}/sync?token=${encodeURIComponent(token ?? "")}`
  }

  /** Uses this access token from the next (re)connect on. */
  setToken(token) {
    this.adapter.url = Sync.#url(token)
  }

  #setOnline(online) {
    this.online = online
    this.dispatchEvent(new Event("connection"))
  }

  /**
   * Opens an activiteit by document id; resolves to its handle, or null when the
   * server does not have it or may not give it to us (the two look the same).
   */
  async open(documentId) {
    if (!isValidDocumentId(documentId)) return null
    let handle
    try {
      handle = await this.repo.find(`automerge:${documentId}`, {
        signal: AbortSignal.timeout(FIND_TIMEOUT_MS),
      })
    } catch {
      return null
    }
    this.#watch(handle)
    return handle
  }

  /** Records the server's acknowledgements of this handle from now on. */
  #watch(handle) {
    if (this.watched.has(handle.documentId)) return
    this.watched.add(handle.documentId)
    const take = (storageId, heads) => {
      if (!heads || storageId !== this.serverStorageId) return
      localStorage.setItem(ackKey(handle.documentId), JSON.stringify(heads))
      this.dispatchEvent(new CustomEvent("acked", { detail: handle.documentId }))
    }
    handle.on("remote-heads", ({ storageId, heads }) => take(storageId, heads))
    if (this.serverStorageId) {
      take(this.serverStorageId, handle.getSyncInfo(this.serverStorageId)?.lastHeads)
    }
  }

  /** The heads the server last acknowledged for a document (bs58check strings). */
  ackedHeads(documentId) {
    const raw = localStorage.getItem(ackKey(documentId))
    return raw ? JSON.parse(raw) : []
  }

  /** Stops syncing and removes every local document and acknowledgement. */
  async wipe() {
    await this.repo.shutdown().catch(() => {})
    for (const key of Object.keys(localStorage)) {
      if (key.startsWith("buurtsync.acked.") || key === KEY_SERVER) localStorage.removeItem(key)
    }
    await new Promise(resolve => {
      const req = indexedDB.deleteDatabase(DATABASE)
      req.onsuccess = req.onerror = req.onblocked = () => resolve()
    })
  }
}
