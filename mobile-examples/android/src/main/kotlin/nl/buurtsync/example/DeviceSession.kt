// A device session (issue 17): the phone signs in once with a coordinator's enrolment
// code (volunteers) or the employer's OIDC token (professionals), then the library asks
// `freshToken()` whenever the server ends a short-lived access token (HTTP 401 or
// websocket close 4401). See docs/client.md, "Token lifecycle".
package nl.buurtsync.example

import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.time.Duration
import uniffi.buurtsync_client.CredentialsProvider

/** The server refused the code, the identity token or the refresh (its answer attached). */
class SignInRefused(message: String) : Exception(message)

/**
 * Holds the session's tokens. `refreshToken` belongs in the Android Keystore-backed
 * storage (EncryptedSharedPreferences); the access token only in memory. A refresh token
 * is used once: the answer's new one replaces it, and reusing an old one ends the whole
 * session (the rotation rule), so refreshes are serialised here.
 */
class DeviceSession private constructor(
    private val baseUrl: String,
    answer: String,
    private val marginSeconds: Long = 30,
) : CredentialsProvider {
    @Volatile var accessToken: String = field(answer, "access_token")
        private set
    @Volatile var refreshToken: String = field(answer, "refresh_token")
        private set
    private var expiresAt: Long = number(answer, "access_token_expires_at")

    /** True once the server refused a refresh: switched off or removed; ask for a new code. */
    @Volatile var signedOut: Boolean = false
        private set

    @Synchronized
    override fun freshToken(): String? {
        if (signedOut) return null
        if (expiresAt - System.currentTimeMillis() / 1000 > marginSeconds) return accessToken
        val (status, body) = postJson("$baseUrl/api/v1/session/refresh", """{"refresh_token":${quote(refreshToken)}}""")
        if (status != 200) {
            signedOut = true // session_revoked / invalid_grant: never retry the old token
            return null
        }
        accessToken = field(body, "access_token")
        refreshToken = field(body, "refresh_token")
        expiresAt = number(body, "access_token_expires_at")
        return accessToken
    }

    companion object {
        private val http: HttpClient = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(15)).build()

        /** Exchanges a coordinator's enrolment code (`ABCD-EFGH`) for a device session. */
        fun enrol(baseUrl: String, code: String, deviceName: String): DeviceSession {
            val body = """{"enrolment_code":${quote(code)},"device_name":${quote(deviceName)}}"""
            val (status, answer) = postJson("$baseUrl/api/v1/session", body)
            if (status != 200) throw SignInRefused("$status: $answer")
            return DeviceSession(baseUrl, answer)
        }

        /** Signs a professional in with the employer's OIDC ID token. */
        fun signIn(baseUrl: String, idToken: String, deviceName: String): DeviceSession {
            val body = """{"id_token":${quote(idToken)},"device_name":${quote(deviceName)}}"""
            val (status, answer) = postJson("$baseUrl/api/v1/session", body)
            if (status != 200) throw SignInRefused("$status: $answer")
            return DeviceSession(baseUrl, answer)
        }

        private fun postJson(url: String, body: String): Pair<Int, String> {
            val request = HttpRequest.newBuilder(URI.create(url))
                .timeout(Duration.ofSeconds(30))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body))
                .build()
            val response = http.send(request, HttpResponse.BodyHandlers.ofString())
            return response.statusCode() to response.body()
        }

        // The answer is a flat JSON object of strings and numbers; on Android use
        // org.json.JSONObject (built in) instead of these two readers.
        private fun field(json: String, name: String): String =
            Regex("\"$name\"\\s*:\\s*\"([^\"]*)\"").find(json)?.groupValues?.get(1)
                ?: throw SignInRefused("no $name in the server's answer")

        private fun number(json: String, name: String): Long =
            Regex("\"$name\"\\s*:\\s*(\\d+)").find(json)?.groupValues?.get(1)?.toLong()
                ?: throw SignInRefused("no $name in the server's answer")

        private fun quote(s: String): String =
            "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\""
    }
}
