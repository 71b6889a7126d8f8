//! Why this exists: the admin pages are plain server-rendered HTML written with `write!`,
//! without a template engine (no new dependency for three small pages). So that nothing
//! from the replicated state can inject markup, every such string goes through `Esc`; this
//! module also holds the page shell (inline CSS and the system font stack: no external
//! scripts, fonts or stylesheets, which the Content-Security-Policy enforces) and the
//! formatting of dates and numbers the pages share.

use std::fmt::{self, Display, Write};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ratchet_policy::Timestamp;

/// Text made safe for HTML element content and quoted attribute values.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// Only what the page itself carries: inline styles, inline SVG, same-origin forms.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = r#"
:root{--fg:#1c2633;--muted:#5d6b7a;--line:#e2e7ed;--bg:#f4f6f9;--card:#fff;--accent:#2459c7;--ok:#23804a;--warn:#a86d00;--bad:#c23434}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans","Liberation Sans","DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.top{background:#17212e;color:#fff;height:50px;padding:0 24px;display:flex;align-items:center;gap:18px}
.top .brand{font-weight:700;font-size:16px;letter-spacing:.03em;color:#fff}
.top .brand span{color:#7fa7ff}
.crumbs{color:#9fb0c3;font-size:13px}.crumbs a{color:#c9d6e6}.crumbs b{color:#fff;font-weight:600}
main{max-width:1480px;margin:0 auto;padding:22px 24px 36px}
.stage{margin-top:4px}
h1{font-size:22px;margin:0 0 2px}
h2{font-size:15px;margin:0 0 10px}
.sub{color:var(--muted);margin:0 0 18px;font-size:13px}
.muted{color:var(--muted)}
.small{font-size:12px}
.cards{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:14px;margin-bottom:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px}
.card .k{color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.06em;font-weight:600}
.card .v{font-size:26px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.card .v small{font-size:13px;font-weight:500;color:var(--muted)}
.split{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:14px;margin-bottom:14px}
.pause{display:flex;justify-content:space-between;align-items:center;gap:24px;flex-wrap:wrap;margin-bottom:14px;padding:16px 18px}
.pause .state{font-size:15px}
.pause>div{flex:1 1 480px;min-width:0}
.pause form{display:flex;align-items:center;gap:8px;flex:none}
.pause .state{margin-bottom:4px}
.pause input[type=number]{width:80px;padding:6px 8px;border:1px solid #c4cdd8;border-radius:6px;font:inherit}
button{padding:7px 16px;border:0;border-radius:6px;background:var(--accent);color:#fff;font:inherit;font-weight:600;cursor:pointer}
button:disabled{background:#9aa8b8;cursor:not-allowed}
.alert{border-radius:8px;padding:10px 14px;margin-bottom:14px;border:1px solid}
.alert.error{background:#fdf0f0;border-color:#f0c4c4;color:#8d1f1f}
.alert.warn{background:#fff7e6;border-color:#f3d9a4;color:#6b4a00}
.alert.info{background:#eef4fd;border-color:#c3d5f3;color:#1d3f73}
.table-wrap{overflow-x:auto;border:1px solid var(--line);border-radius:8px;background:var(--card)}
table{width:100%;border-collapse:collapse}
th,td{padding:9px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
tr:last-child td{border-bottom:0}
tbody tr:hover{background:#f8fafc}
th{font-size:11px;color:var(--muted);font-weight:650;text-transform:uppercase;letter-spacing:.04em;background:#f9fafb;white-space:nowrap}
td{font-size:13px}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.nowrap{white-space:nowrap}
td.server{min-width:200px;max-width:320px}td.server strong{white-space:nowrap}td.server .mono{overflow-wrap:anywhere}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12px}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap;border:1px solid transparent}
.b-grey{background:#eef1f5;color:#435163;border-color:#dde3ea}
.b-blue{background:#e8effd;color:#1f4fb0;border-color:#cfdcf8}
.b-green{background:#e6f4ec;color:#1d6b3e;border-color:#c8e6d3}
.b-amber{background:#fff3dc;color:#8a5a00;border-color:#f3dcaa}
.b-red{background:#fde8e8;color:#a12828;border-color:#f4c7c7}
.b-dark{background:#7d1d1d;color:#fff}
svg.chart{width:100%;height:auto;display:block;font-family:inherit}
footer{color:var(--muted);font-size:12px;margin-top:18px}
.pager{display:flex;gap:14px;align-items:baseline;margin-top:12px}
"#;

/// A whole page: the shell around `body`, with breadcrumbs after the brand.
pub fn document(title: &str, crumbs: &[(&str, Option<&str>)], body: &str) -> String {
    let mut page = String::with_capacity(body.len() + STYLE.len() + 1024);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Ratchet</title><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head>\
         <body><header class=\"top\"><a class=\"brand\" href=\"/\">Ratchet<span> ▸</span></a><nav class=\"crumbs\" aria-label=\"Breadcrumbs\">",
        Esc(title)
    );
    for (index, (label, link)) in crumbs.iter().enumerate() {
        if index > 0 {
            page.push_str(" / ");
        }
        match link {
            Some(href) => {
                let _ = write!(page, "<a href=\"{}\">{}</a>", Esc(href), Esc(label));
            }
            None => {
                let _ = write!(page, "<b>{}</b>", Esc(label));
            }
        }
    }
    let _ = write!(page, "</nav></header><main>{body}</main></body></html>\n");
    page
}

/// An HTML response that no cache keeps (the pages show live state and carry a form).
pub fn respond(status: StatusCode, page: String) -> Response {
    let mut response = (status, page).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// A short page for what has no page of its own: an unknown tenant, an unavailable node.
pub fn message_page(status: StatusCode, heading: &str, message: &str) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"sub\">{}</p><p><a href=\"/\">← All tenants</a></p>",
        Esc(heading),
        Esc(message)
    );
    respond(status, document(heading, &[("Tenants", Some("/")), (heading, None)], &body))
}

/// `2026-03-10`, in a `<time>` that carries the exact instant.
pub fn date(at: Timestamp) -> String {
    format!(
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        at.to_rfc3339(),
        at.format("%Y-%m-%d %H:%M:%S UTC"),
        at.format("%Y-%m-%d")
    )
}

/// `2026-03-10 12:05 UTC`, in a `<time>`.
pub fn date_time(at: Timestamp) -> String {
    format!("<time datetime=\"{}\">{}</time>", at.to_rfc3339(), at.format("%Y-%m-%d %H:%M UTC"))
}

/// 1234567 as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// 1234 as `1.2k`, for axis labels.
pub fn compact(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => trim_decimal(n as f64 / 1e3, "k"),
        1_000_000..1_000_000_000 => trim_decimal(n as f64 / 1e6, "M"),
        _ => trim_decimal(n as f64 / 1e9, "G"),
    }
}

fn trim_decimal(value: f64, unit: &str) -> String {
    let text = format!("{value:.1}");
    format!("{}{unit}", text.strip_suffix(".0").unwrap_or(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            Esc("<a href=\"x\">Tom & 'Jerry'</a>").to_string(),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(Esc("plain.example").to_string(), "plain.example");
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(compact(950), "950");
        assert_eq!(compact(1_000), "1k");
        assert_eq!(compact(12_500), "12.5k");
        assert_eq!(compact(3_000_000), "3M");
    }
}
