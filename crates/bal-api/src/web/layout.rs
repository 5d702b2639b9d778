//! The frame of every page: plain, accessible HTML (landmarks, labels, table headers, a skip
//! link), one small stylesheet, and the one script the live chart needs. Nothing from a CDN.

use maud::{DOCTYPE, Markup, html};

use super::session::WebUser;
use bal_core::Role;

/// A whole page.
pub fn page(title: &str, who: Option<&WebUser>, notice: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Platone BAL" }
                link rel="stylesheet" href="/static/bal.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        strong { "Platone BAL" }
                        @if let Some(w) = who {
                            @match w.user.role {
                                Role::Admin => {
                                    a href="/admin" { "Admin" }
                                }
                                Role::Producer => {
                                    a href="/producer" { "Requests" }
                                    a href={ "/data/" (w.user.username) } { "My data" }
                                }
                                Role::Consumer => {
                                    a href="/consumer" { "Producers" }
                                }
                            }
                            a href="/setpoints" { "Set points" }
                            a href="/certification" { "Certification" }
                            span.who { (w.user.username) " (" (w.user.role) ")" }
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(w.csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    @if let Some(n) = notice {
                        p.notice role="status" { (n) }
                    }
                    (body)
                }
                script src="/static/bal.js" defer {}
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf(w: &WebUser) -> Markup {
    html! { input type="hidden" name="csrf" value=(w.csrf); }
}

/// A button that posts to `action` (a one-click decision).
pub fn post_button(w: &WebUser, action: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(w))
            button type="submit" { (label) }
        }
    }
}

/// A time for tables: UTC, to the second.
pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
