// The generated Kotlin bindings and the Android example code, on the JVM, driving the
// real libbuurtsync_client.so against a real `buurtsync serve` over TLS with a private
// CA. scripts/jvm-test.sh makes the certificates and passes their folder
// (-Dbuurtsync.certs), the server binary (-Dbuurtsync.bin) and jna.library.path.
package nl.buurtsync.example

import java.io.File
import java.nio.file.Files
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import uniffi.buurtsync_client.BuurtClient
import uniffi.buurtsync_client.ClientException
import uniffi.buurtsync_client.ClientOptions
import uniffi.buurtsync_client.ConnectionState
import uniffi.buurtsync_client.DocumentKind
import uniffi.buurtsync_client.Leefdomein
import uniffi.buurtsync_client.defaultClientOptions

private const val WAIT_MS = 30_000L

/** A running `buurtsync serve` with a TLS certificate; its address read from its log. */
class TlsServer(bin: String, database: String, cert: File, key: File) {
    private val process: Process = ProcessBuilder(
        bin, "--database", database, "--log-json", "serve", "--listen", "127.0.0.1:0",
        "--tls-cert", cert.path, "--tls-key", key.path,
    ).redirectOutput(ProcessBuilder.Redirect.DISCARD).start()
    val addr: String

    init {
        val reader = process.errorStream.bufferedReader()
        var found: String? = null
        val deadline = System.currentTimeMillis() + WAIT_MS
        while (found == null && System.currentTimeMillis() < deadline) {
            val line = reader.readLine() ?: break
            if (line.contains("\"buurtsync listening\"")) {
                found = Regex("\"addr\":\"([^\"]+)\"").find(line)?.groupValues?.get(1)
            }
        }
        addr = found ?: run {
            process.destroyForcibly()
            error("the server did not start listening")
        }
        // Keep draining the log so the server never blocks on a full pipe.
        Thread { runCatching { reader.lineSequence().forEach { } } }.apply { isDaemon = true }.start()
    }

    val url get() = "wss://$addr/sync"

    fun stop() {
        process.destroy()
        if (!process.waitFor(WAIT_MS, TimeUnit.MILLISECONDS)) process.destroyForcibly()
    }
}

@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class TlsClientTest {
    private val bin = System.getProperty("buurtsync.bin")
    private val certs = File(System.getProperty("buurtsync.certs"))
    private val dir = Files.createTempDirectory("buurtsync-jvm-").toFile()
    private val database = "sqlite://${File(dir, "server.sqlite3")}"
    private val caPem = File(certs, "ca.pem").readText()
    private lateinit var server: TlsServer
    private lateinit var wrongHost: TlsServer
    private val tokens = mutableMapOf<String, String>()
    private val clients = mutableListOf<BuurtClient>()

    private fun admin(vararg args: String): String {
        val p = ProcessBuilder(bin, "--database", database, "--json", *args)
            .redirectError(ProcessBuilder.Redirect.DISCARD).start()
        val out = p.inputStream.bufferedReader().readText()
        check(p.waitFor() == 0) { "buurtsync ${args.toList()} failed" }
        return out
    }

    @BeforeAll
    fun start() {
        admin("wijk", "add", "noord")
        for (user in listOf("fatima", "sanne")) {
            admin("user", "add", user)
            admin("grant", user, "professional", "--wijk", "noord")
            tokens[user] = Regex("\"token\":\"([^\"]+)\"").find(admin("token", "issue", user))!!.groupValues[1]
        }
        server = TlsServer(bin, database, File(certs, "server.pem"), File(certs, "server.key"))
        wrongHost = TlsServer(bin, database, File(certs, "wronghost.pem"), File(certs, "wronghost.key"))
    }

    @AfterAll
    fun stop() {
        clients.forEach { runCatching { it.shutdown() } }
        server.stop()
        wrongHost.stop()
        dir.deleteRecursively()
    }

    private fun options(startOnline: Boolean = true, ca: String? = caPem): ClientOptions =
        defaultClientOptions().copy(
            discoveryIntervalMs = 300uL,
            backoffInitialMs = 100uL,
            backoffMaxMs = 800uL,
            startOnline = startOnline,
            extraCaPem = ca,
        )

    private fun open(name: String, url: String, user: String, options: ClientOptions): BuurtClient =
        BuurtClient.openWithOptions(File(dir, name).path, ByteArray(32) { 7 }, url, tokens.getValue(user), options)
            .also { clients += it }

    /** A plan made offline on one device reaches a second device over wss:// with a private CA. */
    @Test
    fun planMadeOfflineReachesSecondDeviceOverTls() = runBlocking {
        val phone = open("phone.db", server.url, "fatima", options(startOnline = false))
        val plan = phone.createPlan("noord", "HH-Bakker")
        phone.addGoal(plan, Leefdomein.WONEN, "Huurachterstand oplossen")
        assertEquals(2uL, phone.status().pendingChanges)
        phone.goOnline()
        assertTrue(phone.waitForSync(WAIT_MS.toULong()), "phone: ${phone.status()}")
        assertEquals(ConnectionState.Online, phone.status().state)
        assertEquals(0uL, phone.status().pendingChanges)

        val tablet = open("tablet.db", server.url, "sanne", options())
        // The Flow wrapper of the example code sees the tablet come online.
        withTimeout(WAIT_MS) { tablet.statusFlow().first { it.state == ConnectionState.Online } }
        assertTrue(tablet.waitForSync(WAIT_MS.toULong()), "tablet: ${tablet.status()}")
        val held = tablet.listDocuments(DocumentKind.PLAN, "noord").map { it.id }
        assertEquals(listOf(plan), held)
        assertTrue(tablet.getJson(plan).contains("Huurachterstand oplossen"))
        assertTrue(tablet.status().hasSynced)
    }

    /** A certificate for another host name is a TlsError status, not a retry loop. */
    @Test
    fun wrongHostIsTlsError() = runBlocking {
        val c = open("wronghost.db", wrongHost.url, "fatima", options())
        val status = withTimeout(WAIT_MS) { c.statusFlow().first { it.state is ConnectionState.TlsError } }
        val reason = (status.state as ConnectionState.TlsError).reason
        assertTrue(reason.contains("NotValidForName", ignoreCase = true) || reason.contains("name", ignoreCase = true), reason)
    }

    /** Without the private CA the server's certificate is untrusted: TlsError. */
    @Test
    fun untrustedCertificateIsTlsError() = runBlocking {
        val c = open("untrusted.db", server.url, "fatima", options(ca = null))
        val status = withTimeout(WAIT_MS) { c.statusFlow().first { it.state is ConnectionState.TlsError } }
        val reason = (status.state as ConnectionState.TlsError).reason
        assertTrue(reason.contains("UnknownIssuer", ignoreCase = true) || reason.contains("issuer", ignoreCase = true), reason)
    }

    /** A plain ws:// URL without the opt-in is refused at open with a typed error. */
    @Test
    fun plainWebsocketNeedsOptIn() {
        val plain = server.url.replace("wss://", "ws://")
        val e = assertThrows<ClientException.InsecureUrl> { open("plain.db", plain, "fatima", options()) }
        assertTrue(e.message!!.contains("wss://"), e.message)
    }
}
