//! The server's own HTML pages (the central office's dashboard and `/beheer`):
//! escaping, the page shell and the headers every page carries. Pages are rendered on
//! the server and run no scripts; their Content-Security-Policy forbids any.
//!
//! It exists so that both pages are built one way: a page differs from another in its
//! title, stylesheet, body and referrer policy, nothing else.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::error::Error;

/// Escapes text for HTML and SVG (element content and quoted attributes).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The policy of a server-rendered page: inline styles and images, forms to itself,
/// nothing else (no scripts, no framing).
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What a page tells the browser to send as `Referer` on its links and forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Referrer {
    /// `no-referrer`.
    Never,
    /// `same-origin`: the page's own posts carry a real `Origin` (not `null`), which
    /// the cross-site check reads.
    SameOrigin,
}

/// The headers of every page and of the redirects its forms lead to: the page policy,
/// the referrer policy, no framing, never cached.
fn page_headers(h: &mut HeaderMap, referrer: Referrer) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    let referrer = match referrer {
        Referrer::Never => "no-referrer",
        Referrer::SameOrigin => "same-origin",
    };
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static(referrer));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    crate::web_security::no_store(h);
}

/// One page.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// Shown in the browser's tab; escaped here.
    pub title: &'a str,
    /// The page's stylesheet (inline: the policy allows no other).
    pub style: &'a str,
    pub referrer: Referrer,
}

impl Page<'_> {
    /// The page with `body` (already HTML) as an answer with `status`.
    pub fn respond(&self, status: StatusCode, body: &str) -> Response {
        let page = format!(
            "<!doctype html><html lang=\"nl\"><head><meta charset=\"utf-8\"><title>{}</title>\
             <meta name=\"viewport\" content=\"width=device-width\"><style>{}</style></head>\
             <body>{body}</body></html>",
            escape(self.title),
            self.style
        );
        let mut response = (status, Html(page)).into_response();
        page_headers(response.headers_mut(), self.referrer);
        response
    }
}

impl Page<'_> {
    /// `303 See Other` to `to` (after a form's post), setting `set_cookie` (a
    /// `Set-Cookie` value: a login cookie or its clearing) when given.
    pub fn redirect(&self, to: &'static str, set_cookie: Option<&str>) -> Result<Response, Error> {
        let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
        if let Some(cookie) = set_cookie {
            response.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_str(cookie).map_err(|e| Error::Invalid(e.to_string()))?,
            );
        }
        page_headers(response.headers_mut(), self.referrer);
        Ok(response)
    }
}

/// The form a page's login posts: `token`, a token (or, for `/beheer`, an identity
/// provider's token) given once; the answer is a login cookie.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    pub token: String,
}

/// A page's login: the form that posts a [`LoginForm`] to `action`.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    pub heading: &'a str,
    pub action: &'a str,
    /// The field's label (what to paste).
    pub label: &'a str,
    /// The field's width in characters.
    pub size: u32,
    /// Who the page is for (HTML).
    pub note: &'a str,
}

impl Login<'_> {
    /// The login's body, with `message` (why the last try failed) when there is one.
    pub fn body(&self, message: Option<&str>) -> String {
        let message = message
            .map(|m| format!("<p class=\"error\" id=\"login-error\">{}</p>", escape(m)))
            .unwrap_or_default();
        format!(
            "<h1>{heading}</h1>{message}\
             <form method=\"post\" action=\"{action}\" id=\"login\">\
             <label>{label} <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" required size=\"{size}\"></label> \
             <button class=\"button\" type=\"submit\">Inloggen</button></form>\
             <p class=\"note\">{note}</p>",
            heading = escape(self.heading),
            action = escape(self.action),
            label = escape(self.label),
            size = self.size,
            note = self.note,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character that could end an element or an attribute is escaped.
    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
    }
}
