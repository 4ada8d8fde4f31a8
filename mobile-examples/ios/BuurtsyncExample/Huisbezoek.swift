// The huisbezoek flow on iOS: a professional edits a household plan offline at the
// kitchen table and syncs back at the wijkcentrum. Uses the GENERATED Swift bindings
// (buurtsync_client.swift from scripts/gen-bindings.sh); see ../README.md.
import Foundation

/// Hands library events to the UI. Called on a library thread: hop to the main actor.
final class UiListener: ClientListener, @unchecked Sendable {
    let show: @Sendable (String) -> Void
    init(show: @escaping @Sendable (String) -> Void) { self.show = show }

    func onStatus(status: SyncStatus) {
        show("\(status.state) pending=\(status.pendingChanges) last sync=\(String(describing: status.lastSyncedAtMs))")
    }

    func onChanges(changes: [DocChange]) {
        for c in changes {
            switch c.change {
            case .local: show("saved \(c.docId)")
            case .remote: show("updated from the server: \(c.docId)")
            case .purged(let reason): show("removed from this device (\(reason)): \(c.docId)")
            }
        }
    }
}

/// `key` comes from the Keychain (32 random bytes stored with
/// kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly); `dbPath` is in Application Support.
/// `serverUrl` is `wss://…/sync`; `extraCaPem` is the gemeente's private CA, if any.
func openClient(dbPath: String, key: Data, serverUrl: String, token: String,
                extraCaPem: String? = nil) throws -> BuurtClient {
    do {
        var options = defaultClientOptions()
        options.extraCaPem = extraCaPem
        return try BuurtClient.openWithOptions(dbPath: dbPath, encryptionKey: key, serverUrl: serverUrl,
                                               token: token, options: options)
    } catch ClientError.WrongKey(let message) {
        throw NSError(domain: "buurtsync", code: 1, userInfo: [NSLocalizedDescriptionKey: message])
    }
}

/// The kitchen-table flow; every call persists before it returns, online or not.
/// The library's calls are `async`: they run on the library's own threads.
func huisbezoek(client: BuurtClient, show: @escaping @Sendable (String) -> Void) async throws -> String {
    try client.setListener(listener: UiListener(show: show))
    let plan = try await client.createPlan(wijk: "centrum", pseudonym: "HH-Bakker")
    try await client.setPlanStatus(docId: plan, status: .intake)

    try client.goOffline()
    let goal = try await client.addGoal(docId: plan, leefdomein: .wonen,
                                  description: "Huurachterstand binnen drie maanden oplossen")
    _ = try await client.addAction(docId: plan, who: .inwoner, what: "Afspraak maken met de woningcorporatie",
                             goalId: goal, due: "2026-04-01")
    _ = try await client.addContactMoment(docId: plan, date: "2026-03-02", kind: .huisbezoek,
                                    summary: "Keukentafelgesprek", by: "fatima")
    _ = try await client.addConsent(docId: plan, purpose: "gegevens delen met de woningcorporatie",
                              givenAt: "2026-03-02", givenBy: "mevrouw Bakker")
    show("pending before sync: \(try client.status().pendingChanges)")

    try client.goOnline()
    _ = try await client.waitForSync(timeoutMs: 30_000)
    show(try await client.getJson(docId: plan))
    return plan
}
