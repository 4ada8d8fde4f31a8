// Vite builds the app for the path the server serves it at (/app/) and writes the
// service worker with the list of files it must keep for offline use.
import { createHash } from "node:crypto"
import { readFileSync, readdirSync } from "node:fs"
import { defineConfig } from "vite"

/** Emits sw.js from src/sw-template.js with this build's files and a content hash. */
function serviceWorker() {
  return {
    name: "buurtsync-service-worker",
    apply: "build",
    generateBundle(_options, bundle) {
      const publicFiles = readdirSync(new URL("./public", import.meta.url))
      const shell = ["index.html", ...publicFiles, ...Object.keys(bundle).filter(f => f !== "index.html")]
        .filter(f => !f.endsWith(".map"))
        .sort()
      const hash = createHash("sha256")
      for (const name of Object.keys(bundle).sort()) {
        const item = bundle[name]
        hash.update(name).update(item.type === "chunk" ? item.code : item.source)
      }
      for (const name of publicFiles) hash.update(name).update(readFileSync(new URL(`./public/${name}`, import.meta.url)))
      const source = readFileSync(new URL("./src/sw-template.js", import.meta.url), "utf8")
        .replace("__VERSION__", hash.digest("hex").slice(0, 16))
        .replace("__SHELL__", JSON.stringify(shell))
      this.emitFile({ type: "asset", fileName: "sw.js", source })
    },
  }
}

export default defineConfig({
  base: "/app/",
  plugins: [serviceWorker()],
  build: {
    target: "es2022",
  },
})
