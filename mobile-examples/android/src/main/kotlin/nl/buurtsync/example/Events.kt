// The library's listener as Kotlin Flows: status and document changes, for a ViewModel
// (`client.statusFlow().collect { ... }`). Uses the GENERATED Kotlin bindings.
package nl.buurtsync.example

import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.conflate
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.map
import uniffi.buurtsync_client.BuurtClient
import uniffi.buurtsync_client.ClientListener
import uniffi.buurtsync_client.DocChange
import uniffi.buurtsync_client.SyncStatus

/** One event of the client: its status moved, or documents changed. */
sealed interface ClientEvent {
    data class Status(val status: SyncStatus) : ClientEvent
    data class Changes(val changes: List<DocChange>) : ClientEvent
}

/**
 * Every event of the client as a Flow. The library delivers the current status at once
 * to a new listener, and events from before it was set are not lost. The client has one
 * listener: collect this flow once and share it (`shareIn`) if several screens need it.
 */
fun BuurtClient.events(): Flow<ClientEvent> = callbackFlow {
    setListener(object : ClientListener {
        override fun onStatus(status: SyncStatus) {
            trySend(ClientEvent.Status(status))
        }

        override fun onChanges(changes: List<DocChange>) {
            trySend(ClientEvent.Changes(changes))
        }
    })
    awaitClose { }
}

/** The status as a Flow, newest first when the collector is slow (status bar). */
fun BuurtClient.statusFlow(): Flow<SyncStatus> =
    events().filterIsInstance<ClientEvent.Status>().map { it.status }.conflate()
