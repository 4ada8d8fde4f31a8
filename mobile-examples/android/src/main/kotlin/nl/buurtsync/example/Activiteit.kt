// The activiteit flow on Android: a volunteer logs a session of a group activity.
// Uses the GENERATED Kotlin bindings; see ../README.md. The library's calls are suspend
// functions: they run on the library's own threads, so no Dispatchers.IO is needed.
package nl.buurtsync.example

import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.withContext
import uniffi.buurtsync_client.BuurtClient
import uniffi.buurtsync_client.DocumentKind
import uniffi.buurtsync_client.SessionInput

/** Logs a session on the first activiteit the volunteer's phone holds. */
suspend fun logSession(client: BuurtClient, show: (String) -> Unit): String? {
    // Discovery fills the store: a volunteer's phone holds the activiteiten of their
    // wijk and never a plan.
    client.waitForSync(30_000uL)
    val act = client.listDocuments(DocumentKind.ACTIVITEIT, null).firstOrNull() ?: return null
    client.addSession(
        act.id,
        SessionInput(
            date = "2026-03-10",
            attendance = 14uL,
            volunteerHours = 2.5,
            notes = "Gezellige ochtend",
            signals = listOf("Meneer K. oogt eenzaam en vroeg naar hulp bij formulieren"),
            participants = emptyList(),
        ),
    )
    show("pending: ${client.status().pendingChanges}")
    client.waitForSync(30_000uL)
    show(client.getJson(act.id))
    return act.id
}

/**
 * A volunteer's phone, enrolled with the code the coordinator shows on `/beheer`
 * (`baseUrl` is `https://host`, `serverUrl` its `wss://host/sync`): the device session
 * gives the first access token and is the library's credentials provider from then on.
 */
suspend fun enrolVolunteerPhone(
    dbPath: String,
    key: ByteArray,
    baseUrl: String,
    serverUrl: String,
    code: String,
    deviceName: String,
): Pair<BuurtClient, DeviceSession> {
    val session = withContext(Dispatchers.IO) { DeviceSession.enrol(baseUrl, code, deviceName) }
    val client = openClient(dbPath, key, serverUrl, session.accessToken, refresh = session::freshToken)
    return client to session
}
