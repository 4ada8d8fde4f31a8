// The server's small HTTP API (same origin as the app): who am I, and which
// activiteiten may I read. Answers are cached in localStorage so the app opens offline.

const KEY_TOKEN = "buurtsync.token"
const KEY_ME = "buurtsync.me"
const KEY_LIST = "buurtsync.lijst"

/** Why an API call failed, in words a volunteer understands. */
export class ApiError extends Error {
  constructor(kind, message) {
    super(message)
    this.kind = kind // "token" (refused), "offline" (no answer), "server" (other)
  }
}

export function savedToken() {
  return localStorage.getItem(KEY_TOKEN)
}

async function get(path, token) {
  let response
  try {
    response = await fetch(path, {
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
    })
  } catch {
    throw new ApiError("offline", "Geen verbinding met de server.")
  }
  if (response.status === 401) {
    throw new ApiError("token", "Deze toegangscode is niet (meer) geldig.")
  }
  if (!response.ok) {
    throw new ApiError("server", `De server gaf een fout (${response.status}).`)
  }
  return response.json()
}

/** Checks a token with the server and remembers it with the user's wijken. */
export async function login(token) {
  const me = await get("/api/v1/me", token)
  localStorage.setItem(KEY_TOKEN, token)
  localStorage.setItem(KEY_ME, JSON.stringify(me))
  return me
}

/** The user as last seen online: `{user, wijken: [{wijk, name, roles}], storage_id}`. */
export function cachedMe() {
  const raw = localStorage.getItem(KEY_ME)
  return raw ? JSON.parse(raw) : null
}

/** Refreshes the cached user; returns the cached one when offline. */
export async function refreshMe(token) {
  try {
    const me = await get("/api/v1/me", token)
    localStorage.setItem(KEY_ME, JSON.stringify(me))
    return me
  } catch (e) {
    if (e.kind === "offline" && cachedMe()) return cachedMe()
    throw e
  }
}

/**
 * The activiteiten of the user's wijken, `[{id, url, wijk}]`. Only `kind=activiteit`
 * is asked for, and anything else is dropped: the app never shows a plan, even if a
 * server were to list one.
 */
export async function listActiviteiten(token) {
  try {
    const answer = await get("/api/v1/documents?kind=activiteit", token)
    const list = answer.documents
      .filter(d => d.kind === "activiteit")
      .map(({ id, url, wijk }) => ({ id, url, wijk }))
    localStorage.setItem(KEY_LIST, JSON.stringify(list))
    return { list, fresh: true }
  } catch (e) {
    const raw = localStorage.getItem(KEY_LIST)
    if (e.kind === "offline" && raw) return { list: JSON.parse(raw), fresh: false }
    throw e
  }
}

/** Forgets the token and the cached answers (the documents are cleared separately). */
export function forget() {
  for (const key of [KEY_TOKEN, KEY_ME, KEY_LIST]) localStorage.removeItem(key)
}
