//! The HTTP API's routes: which function serves each, and whether the JWT authorizer guards
//! it. `template.yaml` declares the same routes (a test compares them).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Account,
    Generations,
    Public,
    Admin,
    StripeWebhook,
    Billing,
    Uploads,
    Images,
    Gallery,
    Exports,
}

impl Function {
    /// The function's logical id in `template.yaml`.
    pub fn logical_id(self) -> &'static str {
        match self {
            Self::Account => "AccountFunction",
            Self::Generations => "GenerationsFunction",
            Self::Public => "PublicFunction",
            Self::Admin => "AdminFunction",
            Self::StripeWebhook => "StripeWebhookFunction",
            Self::Billing => "BillingFunction",
            Self::Uploads => "UploadsFunction",
            Self::Images => "ImagesFunction",
            Self::Gallery => "GalleryFunction",
            Self::Exports => "ExportsFunction",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub function: Function,
    pub authorized: bool,
}

impl Route {
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

const fn r(
    method: &'static str,
    path: &'static str,
    function: Function,
    authorized: bool,
) -> Route {
    Route {
        method,
        path,
        function,
        authorized,
    }
}

pub const ROUTES: &[Route] = &[
    r("GET", "/v1/me", Function::Account, true),
    r("POST", "/v1/me", Function::Account, true),
    r("PATCH", "/v1/me", Function::Account, true),
    r("DELETE", "/v1/me", Function::Account, true),
    r("GET", "/v1/me/deletion", Function::Account, true),
    r("GET", "/v1/me/data", Function::Account, true),
    r("GET", "/v1/me/consents", Function::Account, true),
    r("PUT", "/v1/me/consents/{purpose}", Function::Account, true),
    r("POST", "/v1/me/restriction", Function::Account, true),
    r("DELETE", "/v1/me/restriction", Function::Account, true),
    r("POST", "/v1/reports/child-account", Function::Account, true),
    r("POST", "/v1/generations", Function::Generations, true),
    r("GET", "/v1/generations", Function::Generations, true),
    r("GET", "/v1/generations/{id}", Function::Generations, true),
    r(
        "DELETE",
        "/v1/generations/{id}",
        Function::Generations,
        true,
    ),
    r("GET", "/v1/admin/holds", Function::Admin, true),
    r("POST", "/v1/admin/holds", Function::Admin, true),
    r("DELETE", "/v1/admin/holds/{id}", Function::Admin, true),
    r(
        "POST",
        "/v1/admin/users/{id}/suspension",
        Function::Admin,
        true,
    ),
    r(
        "DELETE",
        "/v1/admin/users/{id}/suspension",
        Function::Admin,
        true,
    ),
    r("GET", "/v1/admin/audit", Function::Admin, true),
    r("GET", "/v1/admin/reports", Function::Admin, true),
    r(
        "POST",
        "/v1/admin/reports/{id}/confirm",
        Function::Admin,
        true,
    ),
    r(
        "POST",
        "/v1/admin/reports/{id}/dismiss",
        Function::Admin,
        true,
    ),
    r(
        "POST",
        "/v1/webhooks/stripe",
        Function::StripeWebhook,
        false,
    ),
    r("GET", "/v1/billing", Function::Billing, true),
    r("GET", "/v1/billing/ledger", Function::Billing, true),
    r("POST", "/v1/billing/checkout", Function::Billing, true),
    r("POST", "/v1/billing/portal", Function::Billing, true),
    r("GET", "/v1/billing/invoices", Function::Billing, true),
    r("PUT", "/v1/billing/spend-cap", Function::Billing, true),
    r("POST", "/v1/uploads", Function::Uploads, true),
    r("GET", "/v1/uploads/{id}", Function::Uploads, true),
    r("DELETE", "/v1/uploads/{id}", Function::Uploads, true),
    r("GET", "/v1/images/{id}", Function::Images, true),
    r("PATCH", "/v1/images/{id}", Function::Images, true),
    r("DELETE", "/v1/images/{id}", Function::Images, true),
    r("POST", "/v1/images/{id}/download", Function::Images, true),
    r("GET", "/v1/downloads", Function::Images, true),
    r("POST", "/v1/exports", Function::Exports, true),
    r("GET", "/v1/exports", Function::Exports, true),
    r("GET", "/v1/exports/{id}", Function::Exports, true),
    r("GET", "/v1/gallery", Function::Gallery, false),
    r("GET", "/v1/gallery/{id}", Function::Gallery, false),
    r("GET", "/v1/health", Function::Public, false),
    r("GET", "/v1/policy", Function::Public, false),
    r("GET", "/v1/openapi.json", Function::Public, false),
];

/// Finds the route for a request and its path parameters.
pub fn find(method: &str, path: &str) -> Option<(Route, Vec<(String, String)>)> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    'routes: for route in ROUTES {
        if route.method != method {
            continue;
        }
        let pattern: Vec<&str> = route.path.split('/').collect();
        if pattern.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        for (p, s) in pattern.iter().zip(&segments) {
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if s.is_empty() {
                    continue 'routes;
                }
                params.push((name.to_string(), (*s).to_string()));
            } else if p != s {
                continue 'routes;
            }
        }
        return Some((*route, params));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_templates_and_parameters() {
        let (route, params) = find("GET", "/v1/generations/abc").unwrap();
        assert_eq!(route.path, "/v1/generations/{id}");
        assert_eq!(params, vec![("id".to_string(), "abc".to_string())]);
        assert!(find("GET", "/v1/generations/abc/extra").is_none());
        assert!(find("PUT", "/v1/me").is_none());
        assert_eq!(
            find("GET", "/v1/health").unwrap().0.function,
            Function::Public
        );
    }
}
