//! The UI's embedded assets: one stylesheet and one icon, compiled into the binary (the
//! appliance has no internet and the UI loads nothing from elsewhere). A unit test keeps
//! their total under [`MAX_ASSET_BYTES`].

use crate::ui::UiResponse;

const CSS: &str = include_str!("assets/ui.css");
const ICON: &str = include_str!("assets/icon.svg");

/// The most bytes the embedded assets may take together (the budget is 300 KiB
/// for everything the UI adds to the binary; the assets are most of it).
pub const MAX_ASSET_BYTES: usize = 64 * 1024;

/// Every asset: (path, content type, body).
pub const ASSETS: [(&str, &str, &str); 2] =
    [("/ui/assets/ui.css", "text/css; charset=utf-8", CSS), ("/ui/assets/icon.svg", "image/svg+xml", ICON)];

/// Serves an asset (cached for a day: assets change only with the binary).
#[must_use]
pub fn serve(path: &str) -> UiResponse {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, kind, body)) => {
            UiResponse { status: 200, content_type: kind, body: body.as_bytes().to_vec(), headers: Vec::new() }
                .with_header("cache-control", "private, max-age=86400".to_string())
        }
        None => UiResponse::text(404, "no such asset"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_stay_within_their_budget_and_load_nothing_from_elsewhere() {
        let total: usize = ASSETS.iter().map(|(_, _, body)| body.len()).sum();
        assert!(total <= MAX_ASSET_BYTES, "{total} bytes of assets");
        for (path, _, body) in ASSETS {
            assert!(!body.contains("http://") || path.ends_with(".svg"), "{path} names another origin");
            assert!(!body.contains("https://"), "{path} names another origin");
            assert!(!body.contains("@import") && !body.contains("url("), "{path} loads something");
        }
    }
}
