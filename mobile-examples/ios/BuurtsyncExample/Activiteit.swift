// The activiteit flow on iOS: a volunteer logs a session of a group activity.
// Uses the GENERATED Swift bindings; see ../README.md.
import Foundation

/// Logs a session on the first activiteit the volunteer's device holds.
func logSession(client: BuurtClient, show: @escaping @Sendable (String) -> Void) async throws -> String? {
    // Discovery fills the store: a volunteer holds the activiteiten of their wijk only.
    _ = try await client.waitForSync(timeoutMs: 30_000)
    guard let act = try await client.listDocuments(kind: .activiteit, wijk: nil).first else { return nil }
    _ = try await client.addSession(docId: act.id, session: SessionInput(
        date: "2026-03-10",
        attendance: 14,
        volunteerHours: 2.5,
        notes: "Gezellige ochtend",
        signals: ["Meneer K. oogt eenzaam en vroeg naar hulp bij formulieren"],
        participants: []
    ))
    show("pending: \(try client.status().pendingChanges)")
    _ = try await client.waitForSync(timeoutMs: 30_000)
    show(try await client.getJson(docId: act.id))
    return act.id
}
