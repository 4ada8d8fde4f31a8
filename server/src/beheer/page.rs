//! The HTML of `/beheer`: plain forms and tables, no scripts, strict headers.

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::Response;
use sync_core::partition::WijkId;

use crate::html::{escape, Login, Page, Referrer};
use crate::store::identity::SessionInfo;

/// One wijk as the coordinator sees it.
pub struct WijkView {
    pub wijk: WijkId,
    pub name: String,
    /// (user id, name, roles in the wijk).
    pub people: Vec<(String, String, Vec<String>)>,
    pub devices: Vec<SessionInfo>,
}

/// A code just made.
pub struct Invited<'a> {
    pub wijk: &'a WijkId,
    pub user: &'a str,
    pub name: &'a str,
    pub code: &'a str,
    pub link: &'a str,
    pub qr_svg: &'a str,
    pub expires_at: i64,
}

/// Every `/beheer` page: its posts carry a real `Origin` for the cross-site check.
pub const PAGE: Page<'static> = Page {
    title: "buurtsync — beheer",
    style: STYLE,
    referrer: Referrer::SameOrigin,
};

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    Page { title, ..PAGE }.respond(status, body)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1100px}\
h1{font-size:1.5rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ccc}h3{font-size:1.05rem}\
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border-bottom:1px solid #ddd;padding:.35rem .7rem;text-align:left}\
.button{padding:.4rem .9rem;background:#0b5394;color:#fff;border-radius:4px;border:0;font-size:.95rem;cursor:pointer}\
.danger{background:#a61c00}.note{color:#555;font-size:.9rem}.error{color:#a00}\
.code{font-size:2.4rem;font-family:ui-monospace,monospace;letter-spacing:.2rem}.off{color:#888}\
form.inline{display:inline;margin:0}";

fn when(t: i64) -> String {
    let Ok(secs) = u64::try_from(t) else {
        return "-".into();
    };
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    text.trim_end_matches('Z').replacen('T', " ", 1) + " UTC"
}

const LOGIN: Login<'static> = Login {
    heading: "buurtsync — beheer voor coördinatoren",
    action: "/beheer/login",
    label: "Token of inlogtoken van uw organisatie",
    size: 60,
    note: "Voor coördinatoren: de mensen en apparaten van uw wijk. \
           Vrijwilligers uitnodigen, een kwijtgeraakt apparaat uitschakelen.",
};

/// The login form (optionally with a message).
pub fn login(status: StatusCode, message: Option<&str>) -> Response {
    PAGE.respond(status, &LOGIN.body(message))
}

/// The coordinator's wijken.
pub fn overview(user: &str, wijken: &[WijkView], message: Option<&str>) -> Response {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>buurtsync — beheer</h1><p>Ingelogd als <b id=\"me\">{}</b> \
         <form class=\"inline\" method=\"post\" action=\"/beheer/logout\"><button type=\"submit\">Uitloggen</button></form></p>",
        escape(user)
    );
    if let Some(m) = message {
        let _ = write!(body, "<p class=\"note\">{}</p>", escape(m));
    }
    for w in wijken {
        let id = escape(w.wijk.as_str());
        let _ = write!(
            body,
            "<section class=\"wijk\" data-wijk=\"{id}\"><h2>{} <small>({id})</small></h2>",
            escape(&w.name)
        );
        body.push_str("<h3>Mensen en rollen</h3><table class=\"people\"><tr><th>Naam</th><th>Gebruiker</th><th>Rollen</th><th></th></tr>");
        for (uid, name, roles) in &w.people {
            let removable = !roles.iter().any(|r| r == "coordinator") && uid != user;
            let action = if removable {
                format!(
                    "<form class=\"inline\" method=\"post\" action=\"/beheer/people/{u}/remove\">\
                     <input type=\"hidden\" name=\"wijk\" value=\"{id}\">\
                     <button class=\"button danger\" type=\"submit\" data-remove=\"{u}\">Uit wijk verwijderen</button></form>",
                    u = escape(uid)
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<tr data-user=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
                escape(uid),
                escape(name),
                escape(uid),
                escape(&roles.join(", "))
            );
        }
        body.push_str("</table><h3>Apparaten</h3><table class=\"devices\"><tr><th>Apparaat</th><th>Van</th><th>Aangemeld via</th><th>Sinds</th><th>Laatst gezien</th><th>Status</th><th></th></tr>");
        for d in &w.devices {
            let live = d.revoked_at.is_none() && d.expires_at > crate::store::now();
            let status = match (&d.revoked_at, live) {
                (Some(_), _) => format!(
                    "uitgeschakeld ({})",
                    escape(d.revoked_why.as_deref().unwrap_or("-"))
                ),
                (None, false) => "verlopen".into(),
                (None, true) => "actief".into(),
            };
            let action = if live {
                format!(
                    "<form class=\"inline\" method=\"post\" action=\"/beheer/devices/{s}/off\">\
                     <button class=\"button danger\" type=\"submit\" data-off=\"{s}\">Uitschakelen</button></form>",
                    s = escape(&d.id)
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<tr data-session=\"{}\" class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{status}</td><td>{action}</td></tr>",
                escape(&d.id),
                if live { "live" } else { "off" },
                escape(&d.device_name),
                escape(&d.user_id),
                if d.via == "oidc" { "inlog organisatie" } else { "code" },
                when(d.created_at),
                when(d.last_seen_at),
            );
        }
        let _ = write!(
            body,
            "</table><h3>Vrijwilliger uitnodigen</h3>\
             <form method=\"post\" action=\"/beheer/invite\" class=\"invite\">\
             <input type=\"hidden\" name=\"wijk\" value=\"{id}\">\
             <label>Naam <input name=\"name\" required maxlength=\"80\"></label> \
             <label>Bestaande gebruiker (optioneel) <input name=\"user\" maxlength=\"128\"></label> \
             <button class=\"button\" type=\"submit\">Code maken</button></form>\
             <p class=\"note\">De vrijwilliger opent de app en typt de code, of scant de QR-code. \
             Een code werkt één keer en kort.</p></section>"
        );
    }
    if wijken.is_empty() {
        body.push_str("<p>U coördineert geen wijk.</p>");
    }
    html(StatusCode::OK, "buurtsync — beheer", &body)
}

/// The code and QR code for a volunteer, shown once.
pub fn invited(i: &Invited<'_>) -> Response {
    let body = format!(
        "<h1>Uitnodiging voor {name}</h1>\
         <p>Wijk <b>{wijk}</b>, gebruiker <b id=\"invited-user\">{user}</b>.</p>\
         <p>Code (geldig tot {until}, één keer te gebruiken):</p>\
         <p class=\"code\" id=\"enrolment-code\">{code}</p>\
         <figure id=\"enrolment-qr\">{qr}<figcaption>Of scan: <span id=\"enrolment-link\">{link}</span></figcaption></figure>\
         <p><a href=\"/beheer\">Terug naar beheer</a></p>",
        name = escape(i.name),
        wijk = escape(i.wijk.as_str()),
        user = escape(i.user),
        until = when(i.expires_at),
        code = escape(i.code),
        qr = i.qr_svg,
        link = escape(i.link),
    );
    html(StatusCode::OK, "buurtsync — uitnodiging", &body)
}
