// Service worker of the volunteer web app: keeps the app shell (HTML, the bundled
// JavaScript with automerge's wasm, CSS, icons, manifest) in a cache so the app opens
// without network. Documents are not here: automerge-repo keeps them in IndexedDB.
// The API and the websocket are never cached.
//
// vite.config.js fills in the cache version (a hash of the build) and the file list
// below, so every new build is a new worker with a new cache; old caches are dropped.

const CACHE = "buurtsync-vrijwilliger-__VERSION__"
const SHELL = __SHELL__
const BASE = new URL("./", self.location).pathname

self.addEventListener("install", event => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then(cache => cache.addAll(SHELL.map(path => BASE + path)))
      .then(() => self.skipWaiting()),
  )
})

self.addEventListener("activate", event => {
  event.waitUntil(
    caches
      .keys()
      .then(keys => Promise.all(keys.filter(k => k.startsWith("buurtsync-vrijwilliger-") && k !== CACHE).map(k => caches.delete(k))))
      .then(() => self.clients.claim()),
  )
})

self.addEventListener("fetch", event => {
  const request = event.request
  const url = new URL(request.url)
  if (request.method !== "GET" || url.origin !== self.location.origin || !url.pathname.startsWith(BASE)) return
  // Every page of the app is index.html (its routes are in the fragment).
  const key = request.mode === "navigate" ? BASE + "index.html" : url.pathname
  event.respondWith(
    caches.open(CACHE).then(cache =>
      cache.match(key, { ignoreSearch: true }).then(hit => hit || fetch(request)),
    ),
  )
})
