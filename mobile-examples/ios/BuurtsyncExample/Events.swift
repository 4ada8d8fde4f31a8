// The library's listener as an AsyncStream of events, for SwiftUI (`for await`).
// Uses the GENERATED Swift bindings; see ../README.md.
import Foundation

enum ClientEvent: Sendable {
    case status(SyncStatus)
    case changes([DocChange])
}

private final class StreamListener: ClientListener, @unchecked Sendable {
    let continuation: AsyncStream<ClientEvent>.Continuation
    init(_ continuation: AsyncStream<ClientEvent>.Continuation) { self.continuation = continuation }
    func onStatus(status: SyncStatus) { continuation.yield(.status(status)) }
    func onChanges(changes: [DocChange]) { continuation.yield(.changes(changes)) }
}

extension BuurtClient {
    /// Every event of the client. The current status comes first; events from before
    /// the stream was made are not lost. The client has one listener: make one stream.
    func events() throws -> AsyncStream<ClientEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: ClientEvent.self,
                                                            bufferingPolicy: .bufferingNewest(256))
        try setListener(listener: StreamListener(continuation))
        return stream
    }
}
