//! The central office's routes, merged into the app's router.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use super::{api, dashboard};
use crate::state::AppState;

/// The routes under `/api/v1/central` and `/dashboard`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/central/feed", get(api::feed))
        .route("/api/v1/central/aggregates", get(api::aggregates))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/login", post(dashboard::login))
        .route("/dashboard/logout", post(dashboard::logout))
        .route("/dashboard/aggregates.csv", get(dashboard::download))
}
