// The huisbezoek flow on Android: a professional edits a household plan offline at the
// kitchen table and syncs back at the wijkcentrum. Uses the GENERATED Kotlin bindings
// (package uniffi.buurtsync_client, from scripts/gen-bindings.sh); see ../README.md.
package nl.buurtsync.example

import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.withContext
import uniffi.buurtsync_client.ActionWho
import uniffi.buurtsync_client.BuurtClient
import uniffi.buurtsync_client.ChangeKind
import uniffi.buurtsync_client.ClientException
import uniffi.buurtsync_client.ClientListener
import uniffi.buurtsync_client.ConnectionState
import uniffi.buurtsync_client.CredentialsProvider
import uniffi.buurtsync_client.ContactKind
import uniffi.buurtsync_client.DocChange
import uniffi.buurtsync_client.Leefdomein
import uniffi.buurtsync_client.Moment
import uniffi.buurtsync_client.PlanStatus
import uniffi.buurtsync_client.SyncStatus
import uniffi.buurtsync_client.ZrmDomein
import uniffi.buurtsync_client.defaultClientOptions

/** Posts library events to the UI (here: a log function). Called on a library thread. */
class UiListener(private val show: (String) -> Unit) : ClientListener {
    override fun onStatus(status: SyncStatus) = show(
        when (val state = status.state) {
            is ConnectionState.TlsError -> "certificate problem: ${state.reason}"
            is ConnectionState.Unauthorized -> "please sign in again (nothing is lost)"
            else -> "$state pending=${status.pendingChanges} last sync=${status.lastSyncedAtMs}"
        },
    )

    override fun onChanges(changes: List<DocChange>) = changes.forEach { c ->
        when (val change = c.change) {
            is ChangeKind.Local -> show("saved ${c.docId}")
            is ChangeKind.Remote -> show("updated from the server: ${c.docId}")
            is ChangeKind.Purged -> show("removed from this phone (${change.reason}): ${c.docId}")
        }
    }
}

/**
 * Opens the client. `key` comes from the Android Keystore (32 bytes, e.g. a wrapped AES
 * key unwrapped at start-up); `dbPath` is in the app's private files dir. `serverUrl` is
 * `wss://…/sync`; `extraCaPem` is the gemeente's private CA, if its server uses one.
 * `refresh` hands out a fresh access token, or null: pass a [DeviceSession]'s
 * `freshToken` (enrolment code or OIDC sign-in, refresh-token rotation).
 */
suspend fun openClient(
    dbPath: String,
    key: ByteArray,
    serverUrl: String,
    token: String,
    extraCaPem: String? = null,
    refresh: () -> String? = { null },
): BuurtClient = withContext(Dispatchers.IO) {
    val options = defaultClientOptions().copy(extraCaPem = extraCaPem)
    val client = try {
        BuurtClient.openWithOptions(dbPath, key, serverUrl, token, options)
    } catch (e: ClientException.WrongKey) {
        // The keystore lost or changed the key: the local copy cannot be read.
        throw IllegalStateException("Lokale gegevens onleesbaar: ${e.message}", e)
    }
    client.setCredentialsProvider(object : CredentialsProvider {
        override fun freshToken(): String? = refresh()
    })
    client
}

/** The kitchen-table flow. Every call persists before it returns, online or not. */
suspend fun huisbezoek(client: BuurtClient, show: (String) -> Unit): String {
    client.setListener(UiListener(show))
    val plan = client.createPlan("centrum", "HH-Bakker")
    client.setPlanStatus(plan, PlanStatus.INTAKE)

    client.goOffline() // no network at the kitchen table; nothing else changes
    val goal = client.addGoal(plan, Leefdomein.WONEN, "Huurachterstand binnen drie maanden oplossen")
    client.addAction(plan, ActionWho.INWONER, "Afspraak maken met de woningcorporatie", goal, "2026-04-01")
    client.addContactMoment(plan, "2026-03-02", ContactKind.HUISBEZOEK, "Keukentafelgesprek", "fatima")
    client.addConsent(plan, "gegevens delen met de woningcorporatie", "2026-03-02", "mevrouw Bakker")
    // Outcome monitoring (schema 2): the intake on the day it happened, with scores.
    client.changePlanStatus(plan, PlanStatus.INTAKE, "2026-03-02", "fatima")
    client.addZrmMeasurement(plan, ZrmDomein.FINANCIEN, 2uL, "2026-03-02", Moment.INTAKE, "fatima")
    client.addLadderMeasurement(plan, 2uL, "2026-03-02", Moment.INTAKE, "fatima")
    show("pending before sync: ${client.status().pendingChanges}")

    client.goOnline() // back at the wijkcentrum: the sync loop reconnects by itself
    client.waitForSync(30_000uL)
    show(client.getJson(plan))
    return plan
}
