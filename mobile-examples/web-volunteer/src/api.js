// The server's small HTTP API (same origin as the app): signing in with an enrolment
// code, keeping the device session's short-lived access token fresh, who am I, and
// which activiteiten may I read. Answers are cached in localStorage so the app opens
// offline.
//
// Secrets: the refresh token lives in an HttpOnly cookie the server sets (path
// /api/v1/session, SameSite=Strict): no script of this page can read it. The access
// token (minutes) is kept in memory only; after a reload the app asks for a new one.
// localStorage holds no secret, only which user this device was enrolled for.

const KEY_ENROLLED = "buurtsync.enrolled"
const KEY_ME = "buurtsync.me"
const KEY_LIST = "buurtsync.lijst"
/** Refresh this long before the access token runs out. */
const EARLY_MS = 30_000

/** Why an API call failed, in words a volunteer understands. */
export class ApiError extends Error {
  constructor(kind, message) {
    super(message)
    // "code" (wrong enrolment code), "revoked" (device switched off / signed out),
    // "offline" (no answer), "server" (other)
    this.kind = kind
  }
}

let access = null // {token, expiresAt (ms)}
let pending = null

/** Was this device enrolled (and not signed out since)? */
export function enrolled() {
  return localStorage.getItem(KEY_ENROLLED) !== null
}

async function post(path, body, token) {
  let response
  try {
    response = await fetch(path, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify(body ?? {}),
      cache: "no-store",
      credentials: "same-origin",
    })
  } catch {
    throw new ApiError("offline", "Geen verbinding met de server.")
  }
  const answer = await response.json().catch(() => ({}))
  return { response, answer }
}

function take(answer) {
  access = { token: answer.access_token, expiresAt: answer.access_token_expires_at * 1000 }
  return access.token
}

/** Exchanges an enrolment code from the coordinator for a device session. */
export async function enrol(code, deviceName) {
  const { response, answer } = await post("/api/v1/session", {
    enrolment_code: code,
    device_name: deviceName,
    cookie: true,
  })
  if (response.status === 429) throw new ApiError("code", "Te veel verkeerde codes. Probeer het later opnieuw.")
  if (response.status === 401) throw new ApiError("code", answer.message?.includes("already used") || answer.message?.includes("expired")
    ? "Deze code is al gebruikt of verlopen. Vraag je coördinator om een nieuwe."
    : "Deze code klopt niet. Kijk nog eens goed.")
  if (!response.ok) throw new ApiError("server", `De server gaf een fout (${response.status}).`)
  localStorage.setItem(KEY_ENROLLED, JSON.stringify({ user: answer.user, session: answer.session }))
  take(answer)
  return answer
}

/** A new access token from the refresh cookie (one request at a time). */
export function refresh() {
  pending ??= (async () => {
    try {
      const { response, answer } = await post("/api/v1/session/refresh")
      if (response.status === 401) {
        access = null
        throw new ApiError("revoked", "Dit apparaat is afgemeld. Vraag je coördinator om een nieuwe code.")
      }
      if (!response.ok) throw new ApiError("server", `De server gaf een fout (${response.status}).`)
      return take(answer)
    } finally {
      pending = null
    }
  })()
  return pending
}

/** A live access token: the one in memory, or a fresh one. */
export async function accessToken() {
  if (access && access.expiresAt - Date.now() > EARLY_MS) return access.token
  return refresh()
}

/** When the access token in memory runs out (ms since the epoch), or 0. */
export function accessExpiresAt() {
  return access?.expiresAt ?? 0
}

async function get(path) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const token = await accessToken()
    let response
    try {
      response = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" })
    } catch {
      throw new ApiError("offline", "Geen verbinding met de server.")
    }
    // 401: the access token ran out between our check and the server's; refresh once.
    if (response.status === 401 && attempt === 0) {
      access = null
      continue
    }
    if (response.status === 401) throw new ApiError("revoked", "Dit apparaat is afgemeld.")
    if (!response.ok) throw new ApiError("server", `De server gaf een fout (${response.status}).`)
    return response.json()
  }
}

/** The user as last seen online: `{user, wijken: [{wijk, name, roles}], storage_id}`. */
export function cachedMe() {
  const raw = localStorage.getItem(KEY_ME)
  return raw ? JSON.parse(raw) : null
}

/** Refreshes the cached user; returns the cached one when offline. */
export async function refreshMe() {
  try {
    const me = await get("/api/v1/me")
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
export async function listActiviteiten() {
  try {
    const answer = await get("/api/v1/documents?kind=activiteit")
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

/** Signs this device out at the server (best effort: offline it ends by itself). */
export async function endSession() {
  if (!access) return
  await post("/api/v1/session/end", {}, access.token).catch(() => {})
  access = null
}

/** Forgets the session marker and the cached answers (documents are cleared separately). */
export function forget() {
  access = null
  for (const key of [KEY_ENROLLED, KEY_ME, KEY_LIST, "buurtsync.token"]) localStorage.removeItem(key)
}
